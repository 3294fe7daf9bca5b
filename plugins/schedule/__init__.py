"""Schedulers (hook ``srscode_schedulers``): ratio (new + due reviews) and uniform."""
