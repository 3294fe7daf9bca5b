"""Integrity of what runs a candidate's tests: verdicts in-process tampering cannot forge.

The candidate runs in the same process as pytest, so anything that checks pytest from
inside that process can be replaced by the candidate first. Two things cannot be: a
PEP 578 audit hook (once added, no Python code can remove it) and the worker on the
other side of the result pipe. So:

* The worker fingerprints, before it forks (no candidate code has run yet), everything
  between "pytest collected a test" and "its outcome was recorded": the bindings of every
  module of pytest, pluggy and this sandbox, the attribute dictionaries of their classes,
  the code object of each of their functions, the hook implementations registered with
  pytest's plugin manager, the interpreter hooks in ``sys`` and ``builtins``.
* Right before the session runs in the candidate's process, :func:`arm` adds an audit
  hook whose state is immutable (tuples and frozensets bound as default arguments: no
  cell, global or attribute a candidate could rebind). The hook
  - refuses the primitives of in-process tampering the interpreter audits: assigning a
    function's ``__code__``/``__defaults__``/``__kwdefaults__``, special attributes of
    pytest's classes, ``sys.settrace``/``setprofile`` (trace functions are what
    ``f_lineno`` jumps need), ``sys.monitoring`` callbacks, ``gc.get_objects``/
    ``get_referrers``/``get_referents`` and ``sys._current_frames`` (the ways to reach
    objects the candidate was not handed, e.g. the collected test functions), ctypes'
    library loading and raw memory access, and adding audit hooks. A refused primitive
    ends the candidate's process at once with a ``tamper`` event naming it: nothing is
    raised, so there is no traceback through the hook and nothing to catch;
  - is the only writer of the events a verdict rests on once armed (``collected``, each
    test's call ``phase``, ``done``: the collector calls ``sys.audit("srscode.emit",
    event)``). Before writing, it checks that the call came along pytest's genuine path
    (the collector's hook method, called by pluggy, with only pytest/pluggy/unittest/
    sandbox code below it, on the main thread), that the fingerprints still hold, that no
    thread of the candidate is alive, that no signal handler, gc callback or automatic
    garbage collection could run candidate code behind the runner's back, and it appends
    a seal: a digest of the collected items, the test module's functions and classes and
    the session objects. Any mismatch ends the process with a ``tamper`` event.
* The collector reports, from a wrapper around each test phase, whether the phase
  raised: the exception goes through that wrapper whatever happens to the report
  afterwards. The worker's parser (:mod:`.verdicts`) counts a test as passed only when
  its setup, call and teardown phases raised nothing and its reports say so, every sealed
  event carries the seal of the ``collected`` one, and none came unsealed.

What is fingerprinted is what the warm-up sessions ran (see :func:`build_guard`): each
value a check reads costs the candidate's forked process a copied page, so it pays only
for the runner's own code, which pytest touches anyway (the cost per candidate is in
docs/benchmarks.md, "Evaluator integrity").

docs/security.md lists what this does not defend (chiefly: raw writes of counterfeit
events to the result descriptor by code written against this module, and native code).
"""
from __future__ import annotations

import _signal
import _thread
import dataclasses
import gc
import itertools
import json
import operator
import os
import sys
import types
from dataclasses import dataclass
from typing import Any

TAMPER_EXIT = 75  # exit code of a candidate process ended by the audit hook

# Events the interpreter raises for the primitives of in-process tampering.
REFUSED_EVENTS = frozenset(
    {
        "sys.settrace",
        "sys.setprofile",
        "sys._settraceallthreads",
        "sys._setprofileallthreads",
        "sys.monitoring.register_callback",
        "sys._current_frames",
        "sys._current_exceptions",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys.addaudithook",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.call_function",
        "_thread.start_new_thread",  # audited from Python 3.13 on; a count check covers older ones
    }
)
CODE_ATTRIBUTES = frozenset({"__code__", "__defaults__", "__kwdefaults__"})
GUARDED_PACKAGES = ("_pytest", "pytest", "pluggy", "py", "unittest")  # unittest runs TestCase tests
OWN_MODULES = ("collector", "integrity", "worker", "tracebacks", "harness", "limits", "isolation", "strict_eq")
# Modules whose bindings, class attributes and function code are verified: the ones on the
# path from a collected test to its recorded outcome (every module of pytest, pluggy and
# unittest still counts as genuine code on the runner's stack).
RUNNER_MODULES = frozenset(
    {
        "_pytest.runner", "_pytest.python", "_pytest.reports", "_pytest.main", "_pytest.nodes", "_pytest.fixtures",
        "_pytest.skipping", "_pytest.unittest", "_pytest.outcomes", "pluggy._hooks", "pluggy._callers",
        "pluggy._manager", "pluggy._result", "unittest.case",
    }
)
# the classes whose methods run a test and record its outcome: their attributes are
# fingerprinted (``Function.runtest = ...`` is the classic in-process attack); every class
# of the runner modules is still guarded against special-attribute changes (``__bases__``)
RUNNER_CLASSES = frozenset(
    {
        "Function", "PyobjMixin", "Item", "Node", "Module", "Class", "Package", "Session", "CallInfo", "TestReport",
        "BaseReport", "SetupState", "FixtureRequest", "TopRequest", "SubRequest", "FixtureDef", "FixtureManager",
        "TestCaseFunction", "UnitTestCase", "HookCaller", "HookImpl", "HookRelay", "PluginManager", "Result",
        "TestCase", "Collector",
    }
)
# where a test's report is made and handed to the collector, after its phase wrapper ran
HOT_MODULES = frozenset({"_pytest.runner", "_pytest.reports", "_pytest.skipping", "_pytest.unittest", "pluggy._callers", "pluggy._hooks", "pluggy._manager", "pluggy._result", f"{__package__}.collector"})
# the hooks through which a plugin could decide or change a test's outcome; a new plugin
# registers into these (and the collection hooks) to do so
OUTCOME_HOOKS = (
    "pytest_runtest", "pytest_pyfunc_call", "pytest_fixture", "pytest_collection", "pytest_pycollect",
    "pytest_collect", "pytest_make_collect_report", "pytest_itemcollected", "pytest_generate_tests",
    "pytest_sessionfinish", "pytest_report_teststatus", "pytest_exception_interact",
    "pytest_keyboard_interrupt", "pytest_internalerror", "pytest_deselected", "pytest_ignore_collect",
)
# attributes of the session, config and plugin manager the runner calls through
STRUCTURAL = frozenset({"config", "session", "hook", "pluginmanager", "_inner_hookexec", "_fixturemanager", "items", "_setupstate", "option", "trace"})
SYS_HOOKS = ("excepthook", "unraisablehook", "displayhook", "breakpointhook", "audit", "modules", "meta_path", "path_hooks", "path_importer_cache")

# Instance attributes pytest itself changes while a test runs (so they are not sealed).
VOLATILE = frozenset(
    {
        "funcargs", "_request", "_report_sections", "user_properties", "_initrequest", "stash", "_store",
        "_explicit_tmp_path", "_fixture_defs", "_setupstate", "testsfailed", "testscollected", "shouldstop",
        "shouldfail", "_notfound", "_initial_parts", "_collection_cache", "_node_cache", "_pkg_roots",
        "_inicache", "_opt2dest", "_cleanup_stack", "_cleanup", "_bestrelpathcache", "_hookimpls_cache",
        "exitstatus", "_collection_pkg_roots", "trace", "_name2plugin", "_plugin2hookcallers",
        "_plugin_distinfo", "_conftest_plugins", "_dirpath2confmods", "_conftestpath2mod",
        "_obj", "_ALLOW_MARKERS", "_instance", "_testcase", "_explicit_tearDown", "_excinfo",
        "_pytest_funcarg_", "own_markers", "keywords", "extra_keyword_matches", "location",
        "tearDown_exceptions",  # set on a TestCase class by pytest's unittest support
    }
)


@dataclass(frozen=True)
class Guard:
    """The worker's fingerprint of the runner, taken before any candidate code ran."""

    containers: tuple[Any, ...]  # module dicts, class dict proxies, sys/builtins dicts
    keys: tuple[str, ...]
    values: tuple[Any, ...]
    functions: tuple[types.FunctionType, ...]  # kept alive: their addresses are in function_ids
    function_ids: frozenset[int]
    hot_functions: tuple[types.FunctionType, ...]
    hot_codes: tuple[types.CodeType, ...]
    genuine: frozenset[int]  # ids of every code object of pytest, pluggy and this sandbox
    keep: tuple[Any, ...]  # keeps those code objects (and so their ids) alive
    hook_callers: tuple[Any, ...]
    hook_impls: tuple[tuple[Any, ...], ...]
    impl_functions: tuple[tuple[Any, ...], ...]
    guarded_types: frozenset[int]
    item_types: frozenset[int]
    function_type: int
    module_type: int
    node_slots: tuple[Any, ...]  # C getters of pytest's Node slots (parent, session, config...)
    node_parent: Any
    multicall: types.CodeType
    candidate_frame: types.CodeType  # Worker._candidate: where the checked stack ends
    emit_code: types.CodeType  # Collector.sealed
    hook_method_codes: frozenset[int]
    session: Any
    config: Any
    signals: tuple[int, ...]
    foreign_functions: tuple[tuple[Any, str], ...]
    session_names: tuple[frozenset[str], ...]  # per session object: class attributes + structural names
    item_names: frozenset[str]  # what a test item's class defines: an instance attribute of that name shadows it
    # the audit hook and its check, made once in the worker by :func:`_make_hook` (arming a
    # candidate then only binds its own state: the result descriptor, the test file's code)
    hook: Any = None


_addr = object.__hash__  # an object's address-derived hash: what the hook compares (see check)


def _nested_codes(code: types.CodeType, out: list[types.CodeType]) -> None:
    out.append(code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _nested_codes(const, out)


def _function_of(value: Any) -> types.FunctionType | None:
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    return value if isinstance(value, types.FunctionType) else None


def _guarded_modules() -> list[types.ModuleType]:
    own = {f"{__package__}.{name}" for name in OWN_MODULES}
    mods = []
    for name, mod in sorted(sys.modules.items()):
        if isinstance(mod, types.ModuleType) and (name.split(".")[0] in GUARDED_PACKAGES or name in own):
            mods.append(mod)
    return mods


def code_keys(codes: Any) -> list[list[Any]]:
    """How the warm-up reports the runner code it ran (code objects do not cross processes)."""
    roots = _package_roots()
    return [[c.co_filename, c.co_firstlineno, c.co_name] for c in codes if c.co_filename.startswith(roots)]


def _package_roots() -> tuple[str, ...]:
    roots = []
    for name in (*GUARDED_PACKAGES, __package__):
        mod = sys.modules.get(name)
        path = getattr(mod, "__file__", None)
        if path:
            roots.append(os.path.dirname(path) if name != "pytest" else path)
    return tuple(roots)


def _key(code: types.CodeType) -> tuple[Any, ...]:
    return (code.co_filename, code.co_firstlineno, code.co_name)


def build_guard(config: Any, session: Any, candidate_frame: types.CodeType, used: frozenset[tuple[Any, ...]] = frozenset()) -> Guard:
    """Fingerprint the runner in the pristine worker (see the module doc).

    ``used``: the runner code the warm-up sessions ran (:func:`code_keys`). Bindings and
    class attributes are fingerprinted only where their function ran there: a name the
    runner never looks up changes nothing when rebound, and every value the check reads
    costs the candidate's process a page (copy-on-write) unless the runner reads it too.
    Empty: everything."""
    from pluggy._callers import _multicall

    from . import collector as collector_mod

    containers: list[Any] = []
    keys: list[str] = []
    values: list[Any] = []
    functions: dict[int, types.FunctionType] = {}
    guarded_types: set[int] = set()
    guarded_type_objects: list[type] = []
    code_objects: list[types.CodeType] = []

    def ran(value: Any) -> bool:
        if not used:
            return True
        fn = _function_of(value)
        if fn is not None:
            return _key(fn.__code__) in used
        if isinstance(value, type):
            return any((f := _function_of(m)) is not None and _key(f.__code__) in used for m in vars(value).values())
        return isinstance(value, types.ModuleType)

    def bind(container: Any, key: str, value: Any) -> None:
        containers.append(container)
        keys.append(key)
        values.append(value)

    guarded = _guarded_modules()
    runner = [m for m in guarded if m.__name__ in RUNNER_MODULES or m.__name__.rsplit(".", 1)[-1] in OWN_MODULES]
    for mod in guarded:
        bind(sys.modules, mod.__name__, mod)
        for value in list(vars(mod).values()):
            fn = _function_of(value)
            if fn is not None:
                _nested_codes(fn.__code__, code_objects)
            if isinstance(value, type) and value.__module__ == mod.__name__:
                for member in list(value.__dict__.values()):
                    fn = _function_of(member)
                    if fn is not None:
                        _nested_codes(fn.__code__, code_objects)
    for mod in runner:
        for key, value in list(vars(mod).items()):
            # the runner's own functions, classes and modules, by every name its code uses
            # (imported ones from the standard library and typing are not worth a page each)
            origin = str(getattr(value, "__module__", None) or getattr(value, "__name__", "")).split(".")[0]
            if isinstance(value, (types.FunctionType, type, types.ModuleType)) and origin in GUARDED_PACKAGES and ran(value):
                bind(vars(mod), key, value)
            fn = _function_of(value)
            if fn is not None:
                functions[id(fn)] = fn
            if isinstance(value, type) and value.__module__ == mod.__name__ and id(value) not in guarded_types:
                guarded_types.add(id(value))
                guarded_type_objects.append(value)
                proxy = value.__dict__
                for attr, member in list(proxy.items()) if value.__name__ in RUNNER_CLASSES else ():
                    if attr in ("__dict__", "__weakref__", "__doc__", "_abc_impl", "__abstractmethods__"):
                        continue
                    if (isinstance(member, (types.FunctionType, staticmethod, classmethod, property, type)) or hasattr(type(member), "__get__")) and ran(member):
                        bind(proxy, attr, member)  # behaviour, not data (each value checked costs a page per candidate)
                    fn = _function_of(member)
                    if fn is not None:
                        functions[id(fn)] = fn
    for name in SYS_HOOKS:
        if name in vars(sys):
            bind(vars(sys), name, vars(sys)[name])
    import builtins

    for key, value in list(vars(builtins).items()):
        if not key.startswith("__") or key in ("__import__", "__build_class__"):
            bind(vars(builtins), key, value)
    pm = config.pluginmanager
    callers = tuple(hc for name, hc in sorted(vars(pm.hook).items()) if hasattr(hc, "_hookimpls") and name.startswith(OUTCOME_HOOKS))
    impls = tuple(tuple(hc._hookimpls) for hc in callers)
    hook_methods = frozenset(
        _addr(fn.__code__) for name, fn in vars(collector_mod.Collector).items() if name.startswith("pytest_") and isinstance(fn, types.FunctionType)
    )
    signals = tuple(range(1, _signal.NSIG))
    guard = Guard(
        containers=tuple(containers),
        keys=tuple(keys),
        values=tuple(values),
        functions=tuple(functions.values()),
        function_ids=frozenset(_addr(f) for f in functions.values()),
        hot_functions=tuple(f for f in functions.values() if f.__module__ in HOT_MODULES and (not used or _key(f.__code__) in used)),
        hot_codes=tuple(f.__code__ for f in functions.values() if f.__module__ in HOT_MODULES and (not used or _key(f.__code__) in used)),
        genuine=frozenset(_addr(c) for c in code_objects) | {_addr(candidate_frame)},
        keep=tuple(code_objects),
        hook_callers=callers,
        hook_impls=impls,
        impl_functions=tuple(tuple(i.function for i in row) for row in impls),
        guarded_types=frozenset(_addr(t) for t in guarded_type_objects),
        item_types=frozenset(_addr(t) for t in _item_types()),
        function_type=_addr(_item_types()[0]),
        module_type=_addr(_module_node_type()),
        node_slots=_node_slot_getters(),
        node_parent=_node_slot_getter("parent"),
        multicall=_multicall.__code__,
        candidate_frame=candidate_frame,
        emit_code=collector_mod.Collector.sealed.__code__,
        hook_method_codes=hook_methods,
        session=session,
        config=config,
        signals=signals,
        foreign_functions=resolved_foreign_functions(),
        item_names=frozenset(n for t in _item_types() for n in dir(t)) - VOLATILE,
        session_names=tuple(frozenset(dir(type(o))) | STRUCTURAL for o in (session, config, pm)),
    )
    return dataclasses.replace(guard, hook=_make_hook(guard))


def _item_types() -> list[type]:
    import _pytest.python as py

    out: list[type] = [py.Function]
    try:
        import _pytest.unittest as ut

        out.append(ut.TestCaseFunction)
    except ImportError:  # pragma: no cover - every supported pytest has it
        pass
    return out


def _node_slot_getter(name: str) -> Any:
    """The slot's C getter, called as ``get(obj, None)`` (no Python function a candidate
    could change the defaults of)."""
    import _pytest.nodes as nodes

    return nodes.Node.__dict__[name].__get__


def _node_slot_getters() -> tuple[Any, ...]:
    import _pytest.nodes as nodes

    return tuple(nodes.Node.__dict__[name].__get__ for name in nodes.Node.__slots__ if name != "__dict__")


def _module_node_type() -> type:
    import _pytest.python as py

    return py.Module


def code_ids(test_code: types.CodeType | None) -> frozenset[int]:
    """The addresses of the test file's code objects (the module's and every nested one):
    computed in the worker, once per compiled test file, and handed to :func:`arm`."""
    found: list[types.CodeType] = []
    if test_code is not None:
        _nested_codes(test_code, found)
    return frozenset(_addr(c) for c in found)


def _strip_ctypes(resolved: tuple[tuple[Any, str], ...]) -> None:
    """Drop the foreign functions this process already resolved: CPython does not audit
    calling them (``ctypes.memmove`` writes any address), and resolving new ones is
    refused by the hook. Best effort: docs/security.md says native code is not defended.
    What is already gone (the worker drops most of it once: :func:`strip_worker_ctypes`)
    is not written again (each write costs the candidate's process a copied page)."""
    ct = sys.modules.get("ctypes")
    if ct is None:
        return
    for name in ("memmove", "memset", "_cast", "_string_at", "_wstring_at", "cast", "string_at", "wstring_at"):
        if vars(ct).get(name) is not None:
            setattr(ct, name, None)
    raw = sys.modules.get("_ctypes")
    for name in ("_memmove_addr", "_memset_addr", "_cast_addr", "_string_at_addr", "_wstring_at_addr", "call_function", "call_cdeclfunction"):
        if raw is not None and name in vars(raw):
            delattr(raw, name)
    for lib, attr in resolved:
        if attr in vars(lib):
            delattr(lib, attr)


# the foreign functions a candidate's process calls before arm() (isolation.enter_candidate)
CANDIDATE_SETUP_FUNCTIONS = frozenset({"prctl", "unshare"})


def strip_worker_ctypes(guard: Guard) -> None:
    """In the worker, once its guard is built: drop the raw-memory functions of ctypes and
    the foreign functions a candidate's set-up does not call, so that :func:`arm` only
    drops the few the set-up used (the worker never needs the others again; were it to,
    ctypes would resolve them anew, in the worker, where no hook refuses it)."""
    _strip_ctypes(tuple((lib, attr) for lib, attr in guard.foreign_functions if attr not in CANDIDATE_SETUP_FUNCTIONS))


def resolved_foreign_functions() -> tuple[tuple[Any, str], ...]:
    """(library, attribute) of every foreign function the loaded modules resolved, found
    once in the worker so each candidate only deletes them."""
    ct = sys.modules.get("ctypes")
    if ct is None:
        return ()
    out = []
    for mod in list(sys.modules.values()):
        for value in list(vars(mod).values()) if isinstance(mod, types.ModuleType) else ():
            if isinstance(value, ct.CDLL):
                out.extend((value, attr) for attr, member in list(vars(value).items()) if isinstance(member, ct._CFuncPtr))
    return tuple(out)


def arm(guard: Guard, fd: int, codes: frozenset[int]) -> None:
    """Add the audit hook (see the module doc) in the candidate's process, right before
    its session runs. The hook and its check were made in the worker with everything
    else they use bound as default arguments; here only this candidate's part is bound:
    the result descriptor, the test file's code (``codes``: :func:`code_ids`), the
    thread count and the signal handlers as the worker set them up for this candidate
    (SIGXFSZ ignored, SIGINT raising), which every check must find again."""
    from . import isolation

    isolation._libc = None  # the worker's resolved libc functions: not the candidate's to call
    _strip_ctypes(guard.foreign_functions)
    gc.disable()  # automatic collections would run candidate finalizers inside pytest's code
    hook = guard.hook
    state = (fd, codes, _thread._count(), tuple(map(_signal.getsignal, guard.signals)))
    # the hook's defaults are all its state; once it is added, changing them is refused
    hook.__defaults__ = (*hook.__defaults__[:4], state)
    sys.addaudithook(hook)


def _make_hook(guard: Guard) -> Any:
    """The audit hook and its check, made once in the worker (see :func:`arm`).

    Everything they use is bound as a positional default (an immutable tuple: changing it
    needs ``__defaults__``, which the hook refuses for its own functions), read straight
    from the guard's tuples and frozensets rather than through the guard object. What the
    check compares is laid out here so that a check is a few C-level passes: the
    bindings grouped per container, read with one ``itemgetter`` each (which holds the
    names: checking does not touch the name strings, each of which would cost the
    candidate's process a copied page), the hook implementations as one flat tuple."""
    handled = REFUSED_EVENTS | {"object.__setattr__", "object.__delattr__", "srscode.emit"}
    groups: dict[int, tuple[Any, list[str], list[Any]]] = {}
    for c, k, v in zip(guard.containers, guard.keys, guard.values):
        groups.setdefault(_addr(c), (c, [], []))
        groups[_addr(c)][1].append(k)
        groups[_addr(c)][2].append(v)
    # itemgetter of one name returns the value itself: the name twice keeps every result a tuple
    bind_containers = tuple(c for c, _, _ in groups.values())
    bind_getters = tuple(operator.itemgetter(*ks) if len(ks) > 1 else operator.itemgetter(ks[0], ks[0]) for _, ks, _ in groups.values())
    bind_values = tuple(tuple(vs) if len(vs) > 1 else (vs[0], vs[0]) for _, _, vs in groups.values())
    bind_names = tuple(tuple(ks) for _, ks, _ in groups.values())
    impls_flat = tuple(itertools.chain.from_iterable(guard.hook_impls))
    funcs_flat = tuple(itertools.chain.from_iterable(guard.impl_functions))
    impl_lens = tuple(len(row) for row in guard.hook_impls)

    # The interpreter calls the hook for every audited event (imports, opens, attribute
    # reads of code objects...): it only compares the event's name, then hands the few
    # it handles to ``check``, with the candidate's state (bound by arm()).
    def hook(event: Any, args: Any, _handled: Any = handled, _type: Any = type, _str: Any = str, _check: Any = None, _state: Any = None) -> None:
        if _type(event) is _str and event in _handled:
            _check(event, args, _state)

    def check(
        event: str,
        args: Any,
        state: Any,
        _hook_code: Any = hook.__code__,
        _type: Any = type,
        _str: Any = str,
        _int: Any = int,
        _float: Any = float,
        _bool: Any = bool,
        _id: Any = object.__hash__,  # the address, without the audit event id() raises
        _len: Any = len,
        _all: Any = all,
        _map: Any = map,
        _zip: Any = zip,
        _is: Any = operator.is_,
        _repeat: Any = itertools.repeat,
        _chain: Any = itertools.chain.from_iterable,
        _getcode: Any = operator.attrgetter("__code__"),
        _getimpls: Any = operator.attrgetter("_hookimpls"),
        _getfunction: Any = operator.attrgetter("function"),
        _tuple: Any = tuple,
        _list: Any = list,
        _dict: Any = dict,
        _vars: Any = vars,
        _hash: Any = hash,
        _repr_float: Any = float.__repr__,
        _repr_int: Any = int.__repr__,
        _write: Any = os.write,
        _exit: Any = os._exit,
        _getframe: Any = sys._getframe,
        _ident: Any = _thread.get_ident,
        _count: Any = _thread._count,
        _getsignal: Any = _signal.getsignal,
        _gc_enabled: Any = gc.isenabled,
        _quote: Any = json.encoder.encode_basestring_ascii,  # the C encoder: no Python code runs
        _function: Any = types.FunctionType,
        _method: Any = types.MethodType,
        _moduletype: Any = types.ModuleType,
        _moduledict: Any = types.ModuleType.__dict__["__dict__"].__get__,  # C getters: no class of the
        _typedict: Any = type.__dict__["__dict__"].__get__,  # candidate's can intercept them
        _isinstance: Any = isinstance,
        _refused: Any = REFUSED_EVENTS,
        _code_attrs: Any = CODE_ATTRIBUTES,
        _volatile: Any = VOLATILE,
        _function_ids: Any = guard.function_ids,
        _guarded_types: Any = guard.guarded_types,
        _emit_code: Any = guard.emit_code,
        _hook_methods: Any = guard.hook_method_codes,
        _multicall: Any = guard.multicall,
        _candidate_frame: Any = guard.candidate_frame,
        _genuine: Any = guard.genuine,
        _signals: Any = guard.signals,
        _bind_containers: Any = bind_containers,
        _bind_getters: Any = bind_getters,
        _bind_values: Any = bind_values,
        _bind_names: Any = bind_names,
        _hot_functions: Any = guard.hot_functions,
        _hot_codes: Any = guard.hot_codes,
        _callers: Any = guard.hook_callers,
        _impl_rows: Any = guard.hook_impls,
        _impl_lens: Any = impl_lens,
        _impls_flat: Any = impls_flat,
        _funcs_flat: Any = funcs_flat,
        _session: Any = guard.session,
        _session_objects: Any = (guard.session, guard.config, guard.config.pluginmanager),
        _session_names: Any = guard.session_names,
        _item_types: Any = guard.item_types,
        _item_names: Any = guard.item_names,
        _node_slots: Any = guard.node_slots,
        _node_parent: Any = guard.node_parent,
        _function_type: Any = guard.function_type,
        _module_type: Any = guard.module_type,
        _main: Any = _thread.get_ident(),  # the worker's main thread is the candidate's
        _callbacks: Any = gc.callbacks,
        _own: Any = frozenset(),  # this hook and this check (set below, once they exist)
        _code_exit: Any = TAMPER_EXIT,
        _wrapped: Any = _wrapped_test,
    ) -> None:
        _fd, _test_codes, _threads, _handlers = state

        def tamper(what: str) -> None:
            try:
                _write(_fd, b'{"t": "tamper", "what": [' + _quote(what).encode() + b"]}\n")
            finally:
                _exit(_code_exit)

        try:
            if event in _refused:
                tamper(f"called {event}")
            if event == "object.__setattr__" or event == "object.__delattr__":
                target, name = args[0], args[1]
                if _type(target) is _function and _type(name) is _str and name in _code_attrs:
                    # any function's code; the defaults only of pytest's and the test file's
                    # functions (namedtuple sets its __new__'s defaults)
                    if name == "__code__" or _id(target) in _function_ids or _id(target) in _own or _id(target.__code__) in _test_codes:
                        tamper(f"set {name} of a function")
                if _id(target) in _guarded_types:
                    tamper(f"set an attribute of pytest's class {_type(name) is _str and name or '?'}")
                return
            # "srscode.emit": the collector hands over one event to check, seal and write
            ev = args[0] if _len(args) == 1 else None
            if _type(ev) is not _dict:
                tamper("an event in the wrong shape")
            if _ident() != _main:
                tamper("an event sent from another thread")
            # who asked: the hook (frame 1) for Collector.sealed (frame 2), called by a
            # collector hook method that pluggy called; only genuine code below that
            # (each read of a frame's f_code is an audit event: read once per frame)
            f = _getframe(1)
            if f.f_code is not _hook_code:
                tamper("the integrity check called directly")
            f = f.f_back
            if f is None or f.f_code is not _emit_code:
                tamper("an event not sent by the collector")
            f = f.f_back
            if f is None or _id(f.f_code) not in _hook_methods:
                tamper("a sealed event from outside the collector's hooks")
            f = f.f_back
            code = None if f is None else f.f_code
            if code is not _multicall:
                tamper("a collector hook called from outside pluggy")
            while code is not _candidate_frame:
                if _id(code) not in _genuine:
                    tamper(f"code outside pytest on the runner's stack ({_str(code.co_filename)[-60:]}:{code.co_name[:40]})")
                f = f.f_back
                if f is None:
                    tamper("an event from outside the session")
                code = f.f_code
            # no candidate code may run behind the runner's back
            if _count() != _threads:
                tamper("a thread the candidate started was still running")
            if not _all(_map(_is, _map(_getsignal, _signals), _handlers)):
                tamper("a signal handler was installed")
            if _gc_enabled() or _len(_callbacks):
                tamper("garbage-collector hooks were changed")
            kind = ev.get("t")
            # at collection, after each test's call and at the end, and a setup or teardown
            # that raised (the collector seals nothing else)
            if kind == "phase" and ev.get("when") != "call" and ev.get("raised") is not True:
                tamper("a sealed event of a kind the collector does not seal")
            # the runner's bindings and code, at the end: before it, a rebound or recompiled
            # runner function that mattered would be on the stack when a call phase is sealed
            # (the walk above), and a pass rests only on those; one check, because each value
            # it reads costs a copied page the first time
            if kind == "done":
                for c, get, vs, ks in _zip(_bind_containers, _bind_getters, _bind_values, _bind_names):
                    try:
                        bound = _all(_map(_is, get(c), vs))
                    except KeyError:
                        bound = False
                    if not bound:
                        for k, v in _zip(ks, vs):
                            if k not in c or c[k] is not v:
                                tamper(f"rebound {_str(k)[:60]}")
                if not _all(_map(_is, _map(_getcode, _hot_functions), _hot_codes)):
                    tamper("replaced the code of a pytest function")
            # what decides a test's outcome without being on the stack when its call phase
            # ends: plugins (a pytest_pyfunc_call that returns True) and the items themselves
            rows = _tuple(_map(_getimpls, _callers))
            if not (
                _all(_map(_is, _map(_type, rows), _repeat(_list, _len(rows))))
                and _tuple(_map(_len, rows)) == _impl_lens
                and _all(_map(_is, _chain(rows), _impls_flat))
            ):
                for hc, row, base in _zip(_callers, rows, _impl_rows):
                    if _type(row) is not _list or _len(row) != _len(base) or not _all(_map(_is, row, base)):
                        tamper(f"changed the implementations of pytest's hook {_str(hc.name)[:60]}")
            if not _all(_map(_is, _map(_getfunction, _impls_flat), _funcs_flat)):
                tamper("changed a hook implementation's function")
            # the seal: identities of the collected items, the test module's functions, the session
            items = _vars(_session).get("items", [])
            if _type(items) is not _list:
                tamper("replaced the session's list of items")
            parts = [_id(x) for x in items]
            test_module = None
            for item in items:
                if _id(_type(item)) not in _item_types:
                    tamper("a collected item of an unknown type")
                d = _vars(item)
                if _type(d) is not _dict:
                    tamper("replaced an item's attribute dictionary")
                for k in d:  # keys only: each value touched costs a page per candidate
                    if k in _item_names:  # an instance attribute that shadows the runner's
                        parts.append(_id(k))
                        parts.append(_id(d[k]))
                for get in _node_slots:  # parent, session, config...: slots, not in __dict__
                    parts.append(_id(get(item, None)))
                fn = d.get("_obj")
                if _type(fn) is _method:
                    fn = fn.__func__
                if fn is not None and _id(_type(item)) == _function_type:  # unittest items fetch theirs per run
                    if _type(fn) is not _function or _type(fn.__globals__) is not _dict:
                        tamper("a test that is not a plain function")
                    if _id(fn.__code__) not in _test_codes and not _wrapped(fn, _test_codes):
                        tamper("a test function whose code is not the test file's")
                    parts.append(_id(fn))
                if test_module is None:
                    node = _node_parent(item, None)
                    for _ in range(6):
                        if node is None or _id(_type(node)) == _module_type:
                            break
                        node = _node_parent(node, None)
                    if node is not None:
                        test_module = _vars(node).get("_obj")
                        if _type(test_module) is not _moduletype:
                            tamper("the test module was replaced")
            if test_module is not None:
                # what the tests call by name: the test file's functions, classes (their
                # attributes too: unittest looks test methods up on the class) and modules
                for k, v in _moduledict(test_module).items():
                    tv = _type(v)
                    if tv is _function or tv is _moduletype or _isinstance(v, _type):
                        parts.append(_id(k))
                        parts.append(_id(v))
                        if tv is not _function and tv is not _moduletype:
                            for ck, cv in _typedict(v).items():
                                if ck in _volatile:
                                    continue
                                parts.append(_id(ck))
                                parts.append(_id(cv))
            # the session objects: their structural attributes, and no instance attribute
            # may shadow a method (keys only are walked: each value touched costs a page)
            for obj, names in _zip(_session_objects, _session_names):
                d = _vars(obj)
                if _type(d) is not _dict:
                    tamper("replaced the attribute dictionary of pytest's session")
                parts.append(_len(d))
                for k in d:
                    if k in names:
                        parts.append(_id(k))
                        parts.append(_id(d[k]))
            seal = _repr_int(_hash(_tuple(parts)))
            # the line, written by this code only (the json module is the candidate's to rebind)
            out = []
            for k, v in ev.items():
                tv = _type(v)
                if tv is _str:
                    val = _quote(v)
                elif tv is _bool:
                    val = "true" if v else "false"
                elif tv is _int:
                    val = _repr_int(v)
                elif tv is _float:
                    val = _repr_float(v)
                elif tv is _list and _all(_type(x) is _str for x in v):
                    val = "[" + ", ".join([_quote(x) for x in v]) + "]"
                else:
                    tamper("an event with a value of an unexpected type")
                    return
                if _type(k) is not _str:
                    tamper("an event with a key of an unexpected type")
                out.append(_quote(k) + ": " + val)
            out.append('"s": "' + seal + '"')
            data = ("{" + ", ".join(out) + "}\n").encode("utf-8", "surrogatepass")
            while data:
                data = data[_write(_fd, data):]
        except BaseException as exc:  # never let an exception (and a traceback through us) out
            tamper(f"the integrity check failed ({_type(exc).__name__})")

    # their defaults are all their state: changing them later is refused like any pytest
    # function's (a signal handler that fired inside the hook could otherwise reach them)
    names = check.__code__.co_varnames[check.__code__.co_argcount - len(check.__defaults__) : check.__code__.co_argcount]
    own = frozenset({_addr(hook), _addr(check)})
    check.__defaults__ = tuple(own if n == "_own" else v for n, v in zip(names, check.__defaults__))
    hook.__defaults__ = (handled, type, str, check, None)
    return hook


def _wrapped_test(fn: Any, test_codes: frozenset[int]) -> bool:
    """A decorated test (``functools.wraps``, ``mock.patch``): the wrapper is library code
    that existed before the candidate ran, around a function of the test file."""
    inner = fn
    for _ in range(8):
        inner = inner.__dict__.get("__wrapped__") if isinstance(inner, types.FunctionType) else None
        if not isinstance(inner, types.FunctionType):
            return False
        if _addr(inner.__code__) in test_codes:
            return _library_code(fn.__code__)
    return False


def _library_code(code: types.CodeType) -> bool:
    """Whether ``code`` belongs to a function of a module other than the candidate's and
    the test file (the rare decorated-test path, so computed when needed, never cached)."""
    for name, mod in list(sys.modules.items()):
        if name in ("solution", "test_solution") or not isinstance(mod, types.ModuleType):
            continue
        for value in list(vars(mod).values()):
            fn = _function_of(value)
            if fn is None:
                continue
            found: list[types.CodeType] = []
            _nested_codes(fn.__code__, found)
            if any(c is code for c in found):
                return True
    return False
