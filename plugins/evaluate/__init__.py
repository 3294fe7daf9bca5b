"""Evaluators (hook ``srscode_evaluators``) and the sandbox library they run candidates in."""
