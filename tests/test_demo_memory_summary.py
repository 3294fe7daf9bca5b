"""The end of ``srscode run``'s output (issue 19, part 3: the demo's final summary says what
happened and where the report is): one line of what the run did, the trained adapter, and
the ``srscode report`` command with the page it writes."""
from __future__ import annotations

from srscode.cli.main import _print_run_end


def test_the_run_ends_with_what_happened_the_adapter_and_the_report(tmp_path, capsys):
    final = tmp_path / "final" / "adapter-dpo"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{}")
    summary = {"run_dir": str(tmp_path), "round": 2, "rounds_planned": 2, "adapter": str(tmp_path / "rounds" / "a"),
               "validations": {"0": {}, "2": {}}, "final_dpo": {"dpo_pairs": 10.0, "dpo_pairs_trained": 10.0}}
    _print_run_end(summary, 173.4)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("done      2 of 2 rounds committed, final DPO on 10 pairs, validated before and after "
                      "(2 min 53 s in this call)")
    assert out[1].startswith(f"adapter   {final}")
    assert out[2].startswith(f"report    srscode report {tmp_path}  (writes {tmp_path / 'report' / 'report.html'}")


def test_without_dpo_the_last_round_adapter_is_named(tmp_path, capsys):
    summary = {"run_dir": str(tmp_path), "round": 1, "rounds_planned": 3, "adapter": "/x/rounds/000001/adapter"}
    _print_run_end(summary, 61)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "done      1 of 3 rounds committed (1 min 01 s in this call)"
    assert out[1].startswith("adapter   /x/rounds/000001/adapter")
