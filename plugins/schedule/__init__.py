"""Schedulers (hook ``srscode_schedulers``): ratio (new + due reviews), uniform and
learnability (max p(1-p) + re-tests of solved tasks)."""
