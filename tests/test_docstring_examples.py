"""Every example in the package's docstrings runs and prints what it shows.

The examples are the first thing an analyst copies; a stale one misleads. They are run
module by module, as ``python -m doctest`` would, so that a change of behaviour shows up
here instead of in a user's notebook.
"""

import doctest
import importlib
import pkgutil

import pytest

import microarch

MODULES = sorted(module.name for module in
                 pkgutil.walk_packages(microarch.__path__, prefix="microarch."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module, name):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
