"""Hook specifications of the ``gradkit`` plugin system.

Every hook is a *registration* hook: gradkit calls it once per plugin with a
``register`` callback that is already bound to the hook's kind and to the calling
plugin.  A plugin calls ``register(name, target, **metadata)`` once per component:

``name``
    component name: lower-case for methods (``lion``, ``cf-cam``, ``dsac-t``); envs use their
    gymnasium id (``gradkit/AntOmni-v0``).
``target``
    ``"package.module:attr"`` string.  Nothing is imported until a user asks for
    the component (:func:`gradkit_core.get` / :func:`gradkit_core.create`), so the
    module holding the hook implementations must import nothing heavy (no torch).
``metadata``
    ``summary`` (one line), ``paper`` (``{"title", "arxiv", "year"}``), ``tags``,
    ``capabilities``, ``defaults`` (keyword arguments merged into ``create``).

The docstring of each hook states the contract that objects of that kind follow.
The conformance suites in :mod:`gradkit_core.testing` check those contracts.
"""

from __future__ import annotations

import pluggy

PROJECT = "gradkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gradkit_register_explainers(register):
    """Register saliency / attribution methods (kind ``explainers``).

    Contract: ``create(name, model, target_layer=..., **kw)`` returns an object that
    is a context manager; ``cam(x, targets=None)`` returns a float tensor
    ``(B, H, W)`` in ``[0, 1]`` on ``x``'s device for ``x`` of shape ``(B, C, H, W)``
    (``targets=None`` explains the predicted class; one int applies to the whole
    batch; otherwise one class per input).  Leaving the context removes every
    forward/backward hook the explainer installed (also after an error); the
    user's parameters, ``requires_grad`` flags, ``.grad`` fields and training modes
    are left as they were.  Maps depend on the class: where two classes rest on
    different regions, each class's map favours its own region.  Bad input is a
    clear error naming the problem, never a silent all-zero or NaN map: NaN/inf in
    ``x`` or in the logits, ``x`` that is not a non-empty floating ``(B, C, H, W)``
    batch, targets that are not 1-D integer classes in range or not one per input,
    a target layer outside the model.  Explainers may also accept a list of target
    layers and a ``reshape_transform`` (pytorch-grad-cam's conventions).
    :class:`gradkit_core.testing.explainers.ExplainerConformance` checks all of this.
    """


@hookspec
def gradkit_register_optimizers(register):
    """Register optimizers (kind ``optimizers``).

    Contract: the target is a ``torch.optim.Optimizer`` subclass (or a factory
    returning one) taking ``params`` first; hyperparameters live in ``defaults``
    and are read from ``group[...]`` at step time; state is created lazily;
    ``step(closure=None)`` calls the closure under ``torch.enable_grad()`` and
    returns its loss; parameters whose ``grad`` is ``None`` are left untouched;
    ``state_dict()`` / ``load_state_dict()`` round-trip to an identical
    continuation.  A NaN, inf or negative learning rate or weight decay (and any
    other non-finite or out-of-range hyperparameter) is a ``ValueError`` at
    construction; a NaN/inf gradient is a clear ``ValueError`` (or
    ``FloatingPointError``) raised before any parameter or state is changed, even
    when it sits in a later param group (all groups are checked first).
    :class:`gradkit_core.testing.optimizers.OptimizerConformance` checks it.
    Things that rewrite gradients for *any* optimizer are kind ``transforms``.
    """


@hookspec
def gradkit_register_transforms(register):
    """Register gradient transforms (kind ``transforms``): they decide what lands in ``p.grad``
    for whatever optimizer the user steps, and never change a parameter themselves.

    Contract, in two forms:

    * **multi-task aggregators** -- ``create(name, model, loss_fns={task: fn(output, target)},
      lambdas={task: weight} or None, accumulation_steps=N, **hp)``; ``step(data_provider)``
      pulls N micro-batches (``data_provider() -> (inputs, targets)``), accumulates one gradient
      per task (of ``lambda_i * L_i``), combines them (``combine(grads)``, grads
      ``{task: [tensor per trainable parameter]}``) and writes the result into ``.grad`` of every
      trainable parameter of ``model``, returning a dict of statistics; then ``optimizer.step()``.
      With agreeing tasks the written gradient points along the summed gradient (a sign-type
      output: a descent direction).  State kept across steps round-trips through
      ``state_dict()`` / ``load_state_dict()``.  A NaN, inf or negative ``lambdas`` entry, or a
      non-finite hyperparameter, is a ``ValueError`` at construction; a non-finite task loss or
      task gradient is a ``ValueError`` raised before ``.grad`` or the state change.
    * **layer wrappers** -- ``create(name, layer, **hp)`` returns a module that shares the
      layer's parameters and state-dict keys, computes the layer's forward and writes the
      transformed gradient in backward; wrapping a wrapped layer returns it unchanged.  A
      non-finite input or upstream gradient is a ``ValueError`` that leaves ``.grad`` as it was.

    :class:`gradkit_core.testing.transforms.TransformConformance` checks both.
    """


@hookspec
def gradkit_register_text_optimizers(register):
    """Register optimizers of text variables (kind ``text_optimizers``), e.g. TextGrad's TGD: they
    update text with an LLM guided by textual feedback ("textual gradients"); no tensors involved.

    Contract: ``create(name, parameters, engine, **hp)``.  ``parameters`` are the plugin's text
    variables: each has a ``.value`` string, a role description, ``requires_grad``, and the
    feedback that the plugin's ``backward`` attached to it.  ``engine`` is a callable
    ``engine(prompt, system_prompt=None, **kw) -> str``.  ``zero_grad()`` clears every parameter's
    feedback; ``step()`` asks ``engine`` once per parameter with feedback (more only under a
    documented retry policy) for an improved value and sets it.  Rules:

    * the prompt for a parameter contains its current value, its role description and its current
      feedback (feedback cleared by ``zero_grad()`` is gone from later prompts, unless a documented
      memory option is switched on); each parameter gets the engine's proposal for it;
    * a step is atomic: if any reply is malformed (no parsable proposal, under the component's
      default policy) or the engine raises, ``step()`` raises a clear error and every value and
      every piece of optimizer state is as it was before the step;
    * an empty or whitespace-only proposal never becomes a value (an error, or the old value kept
      under a documented policy);
    * no parameters, or a parameter with ``requires_grad=False``, is a ``ValueError`` at
      construction, as is a non-finite, negative or unknown hyperparameter (policy names included);
      an engine reply that is not a ``str`` is a ``TypeError``.

    :class:`gradkit_core.testing.text_optimizers.TextOptimizerConformance` checks all of it.
    """


@hookspec
def gradkit_register_unlearners(register):
    """Register machine-unlearning methods (kind ``unlearners``).

    Contract (one calling convention for every unlearner)::

        unlearner = create(name, model, **hyperparameters)
        model = unlearner.unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)

    * Construction validates the hyperparameters: NaN / inf / out-of-range values
      raise ``ValueError`` there, before any data is seen.
    * ``unlearn`` returns the unlearned model (updated in place).  ``forget`` /
      ``retain`` are re-iterable collections of batches: ``(x, y)`` tuples / lists of
      tensors for classifiers; for language models a dict ``{"input_ids": LongTensor
      (B, T), "attention_mask": optional (B, T), "forget_mask": optional bool (B, T)
      marking the tokens to forget}`` or a bare ``input_ids`` LongTensor.
    * Budget: ``epochs`` = passes over the forget set (methods that train on the
      retain set only count passes over it), ``max_steps`` = cap on update steps;
      either, both (whichever ends first) or neither (the method's registered default
      budget).  After the call ``unlearner.last_run`` is a dict with at least
      ``steps`` (int), ``epochs`` (completed passes, float) and ``stopped_by``
      (``"epochs"``, ``"max_steps"`` or a method-specific reason such as
      ``"stop_fn"``), so a budget is never cut silently.
    * ``seed``: an int makes the run deterministic (random labels, zeroth-order
      directions, shuffles, dropout) and leaves the caller's global RNG state as it
      was; two runs with the same seed give identical parameters.
    * ``retain=None`` is allowed only for methods that do not use retain data; a
      method that needs it raises ``ValueError``; an empty forget set, or an empty
      retain set that is needed, is a ``ValueError``.
    * Bad input (NaN / inf inputs, out-of-range labels or token ids, an all-False
      ``forget_mask``) is a ``ValueError`` naming the problem, and a failed run
      leaves the model's parameters as they were.

    ``gradkit_core.testing.unlearners.UnlearnerConformance`` checks all of it.
    """


@hookspec
def gradkit_register_agents(register):
    """Register reinforcement-learning / quality-diversity agents (kind ``agents``).

    Contract (stable-baselines3's signatures): ``create(name, env, seed=0, **hp)``;
    ``learn(total_timesteps, callback=None, ...)`` returns the agent;
    ``predict(obs, state=None, episode_start=None, deterministic=False)`` returns
    ``(action, state)`` for one observation or a batch, so SB3's ``evaluate_policy``
    works on the agent; a non-finite observation is a ``ValueError``;
    ``save(path)`` and classmethod ``load(path, env=None)`` use a plain format or
    ``torch.load(weights_only=True)``, never arbitrary pickles; ``load`` never imports
    a module named inside the file (e.g. a gymnasium id ``module:Name-v0``), and an
    empty, truncated or inconsistent file, or one with non-finite weights, is a
    ``ValueError`` naming the file and the problem;
    ``evaluate(n_episodes)`` returns mean and std return.
    Checked by :class:`gradkit_core.testing.agents.AgentConformance`.
    """


@hookspec
def gradkit_register_simulators(register):
    """Register differentiable simulators (kind ``simulators``).

    Contract: a simulator exposes ``reset()`` / ``step(action)`` on torch state and
    a differentiable ``rollout(...)`` whose outputs backpropagate to actions,
    initial state and physical parameters.
    """


@hookspec
def gradkit_register_envs(register):
    """Register gymnasium environments (kind ``envs``).

    Contract: ``name`` is the gymnasium id (``gradkit/AntOmni-v0``); the target is
    the env class; the same id is registered with ``gymnasium.register`` using a
    string entry point, and the env passes
    ``gymnasium.utils.env_checker.check_env``; a
    non-finite (NaN/inf) entry in a ``Box`` action is a ``ValueError`` that leaves the
    env unchanged (never NaN rewards, clipped or zeroed actions, or a silent physics
    reset). Checked by :class:`gradkit_core.testing.envs.EnvConformance`.
    """


@hookspec
def gradkit_register_samplers(register):
    """Register diffusion / generative samplers (kind ``samplers``).

    Contract: ``create(name, model, schedule, **kw)``; ``sample(x_T, steps)``
    returns samples and reports the number of model evaluations (NFE).
    """


@hookspec
def gradkit_register_estimators(register):
    """Register gradient estimators and variational objectives (kind ``estimators``).

    Contract: an estimator turns a stochastic program / objective into a
    differentiable surrogate whose gradient is an (unbiased unless stated)
    estimate of the objective's gradient.
    """


@hookspec
def gradkit_register_architectures(register):
    """Register model architectures and layers (kind ``architectures``).

    Contract: the target is a ``torch.nn.Module`` subclass or a factory returning
    one; constructor arguments are keyword hyperparameters (an unknown one is a TypeError);
    eval-mode forward is deterministic and finite on ordinary input; NaN/inf inputs, wrong
    feature sizes and invalid token ids are clear errors, never NaN outputs.
    :class:`gradkit_core.testing.architectures.ArchitectureConformance` checks it.
    """


@hookspec
def gradkit_register_trainers(register):
    """Register training procedures (kind ``trainers``).

    Contract: ``create(name, model, **hp).fit(data, ...)`` trains and returns the
    model (or a result object holding it).  A method that builds its own model
    (boosting, say) is a scikit-learn estimator instead: ``create(name, **hp)``,
    then ``fit(X, y)`` returns the fitted estimator.
    """


@hookspec
def gradkit_register_rewards(register):
    """Register reward functions / reward shaping (kind ``rewards``).

    Contract: a callable mapping (batches of) samples to one finite float reward per sample,
    deterministic for the same inputs, with any running normalisation state exposed as
    attributes and round-tripping through ``state_dict()`` / ``load_state_dict()``.  NaN/inf
    rewards and empty batches are clear errors that leave the state as it was.
    :class:`gradkit_core.testing.rewards.RewardConformance` checks it.
    """


@hookspec
def gradkit_register_solvers(register):
    """Register numerical solvers (kind ``solvers``).

    Contract: ``create(name, **options).solve(problem, ...)`` returns a result
    object with the solution and a per-iteration history.
    """


@hookspec
def gradkit_register_benchmarks(register):
    """Register benchmarks (kind ``benchmarks``): speed/memory comparisons and task suites.

    Contract: the target is a callable ``run(*, quick=False, full=False, seed=0, jobs=1, resume=False,
    out=None, progress=True) -> Result`` (see below); ``gradkit bench NAME`` runs the benchmark
    registered under the plugin's name.  Comparisons run side by side in one process and report
    ratios.

    The callable's keyword arguments (it declares the ones it supports; the CLI passes only those
    and refuses an option the callable does not take):

    ``quick`` (bool)
        the smallest setting that still decides the claims it reports (seconds to a minute or two);
    ``full`` (bool)
        the long setting, where there is one (``gradkit ... --full``);
    ``seed`` (int)
        base seed; everything random derives from it;
    ``jobs`` (int) / ``resume`` (bool)
        for experiments made of independent runs: worker processes
        (:func:`gradkit_core.results.run_many`) and reuse of the runs stored under ``out/runs``;
    ``out`` (Path or None)
        a directory the core has already created and checked writable; the callable may keep
        run caches there, but does **not** save its result: the core writes ``NAME.json`` (with
        the run's metadata: seconds, seed, mode, versions, command) and ``NAME.png`` once;
    ``progress`` (bool)
        show a progress bar for long loops.

    It returns a :class:`gradkit_core.results.Result`.
    """


@hookspec
def gradkit_register_reproductions(register):
    """Register small-scale reproductions of a paper's claim (kind ``reproductions``).

    Contract: the target is a callable ``run(*, quick=False, full=False, seed=0, jobs=1,
    resume=False, out=None, progress=True) -> Result``; it trains/evaluates the method next to the
    paper's baselines, seeded, and reports the paper's own metrics together with whether each claimed
    direction held, decided over seeds with a noise margin.  ``gradkit reproduce NAME`` runs it.

    Its keyword arguments and what the core does with ``out`` are those of
    :func:`gradkit_register_benchmarks`.
    """


@hookspec
def gradkit_register_metrics(register):
    """Register evaluation metrics (kind ``metrics``).

    Contract: a callable (or class whose instances are callables) returning a
    float or a tensor of per-example scores; its docstring says whether higher
    is better.
    """


# the kinds and their hook names live in a module without pluggy (a cached `gradkit list` never imports it)
from ._kinds import EXPERIMENT_KINDS, KIND_HOOKS  # noqa: E402,F401
