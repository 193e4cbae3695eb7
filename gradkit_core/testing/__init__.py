"""Conformance suites: pytest base classes that hold the rules of each kind once.

A plugin's test module subclasses the suite of its kind and supplies what the
suite needs (see each class's docstring)::

    from gradkit_core.testing.optimizers import OptimizerConformance

    class TestLionConformance(OptimizerConformance):
        component = "lion"
        component_kwargs = {"lr": 1e-3}

Each kind's suite lives in the module of the same name, e.g.
``gradkit_core.testing.optimizers.OptimizerConformance`` and
``gradkit_core.testing.transforms.TransformConformance`` (gradient transforms:
multi-task aggregators and layer wrappers) and
``gradkit_core.testing.text_optimizers.TextOptimizerConformance`` (optimizers of text
variables driven by an LLM engine, e.g. TGD; that module imports nothing heavy).

Importing this package imports nothing heavy; each suite module imports torch.
"""
