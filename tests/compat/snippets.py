"""neural-tangents 0.6.5 user code, written once and run against either library.

Each snippet is the fully-connected code of one of neural-tangents' README sections, ``examples/``
scripts, notebooks or tests (named in its docstring), as a user writes it: ``jax``, ``jax.numpy as
np``, ``jax.example_libraries.optimizers`` and the library's ``nt``, ``stax`` and ``predict``.
The only things taken away from the user are the module objects, passed in as arguments (so the
same source runs under ``neural_tangents`` in ``generate_compat.py`` and under ``fastntk`` in
``test_compat.py``), and the data sets, passed in as ``data`` (NumPy arrays drawn once by the
generator and stored with the results, since ``jax.random`` draws differ across jax versions).
PRNG key integers stay literals in the code, as users write them.

A snippet records its results in ``out`` as it goes (``out[name] = value``), so that a snippet
which fails half-way still shows which of its earlier results agree.

Snippet metadata (:data:`SNIPPETS`): ``x64`` (run with float64 enabled, else float32) and
``user_splits`` (the user's code splits PRNG keys itself: run under jax's pre-0.5 key-splitting
rule, the one neural-tangents' jax 0.4.23 used; see :func:`jax_mode`).
"""

# The snippets keep neural-tangents' user code as written (unused unpacked layers, dict(...) kwargs).
# ruff: noqa: RUF059, C408, RUF005

from __future__ import annotations

import contextlib

import jax
import jax.numpy as np
import numpy as onp
from jax import grad, jit, random, vmap
from jax.example_libraries import optimizers
from jax.nn import log_softmax

#: name -> (function, metadata dict); filled by @snippet in definition order.
SNIPPETS = {}


def snippet(*, x64=True, user_splits=False):
    def register(fn):
        SNIPPETS[fn.__name__] = (fn, {"x64": x64, "user_splits": user_splits,
                                      "provenance": fn.__doc__.strip().splitlines()[0]})
        return fn

    return register


@contextlib.contextmanager
def jax_mode(x64, user_splits):
    """float64 on or off; with ``user_splits``, jax's legacy (non-partitionable) threefry split.

    jax >= 0.5 changed the default of ``jax_threefry_partitionable`` to True, which changes the
    keys ``random.split`` returns; neural-tangents 0.6.5's reference values were computed with
    jax 0.4.23, where it was False. The flag belongs to jax, not to either library.
    """
    with contextlib.ExitStack() as stack:
        if hasattr(jax, "enable_x64"):  # jax >= 0.7
            stack.enter_context(jax.enable_x64(x64))
        else:  # jax 0.4.23 (neural-tangents' environment)
            from jax.experimental import disable_x64, enable_x64

            stack.enter_context(enable_x64() if x64 else disable_x64())
        if user_splits and hasattr(jax, "threefry_partitionable"):
            stack.enter_context(jax.threefry_partitionable(False))
        yield


class Recorder(dict):
    """``out[name] = value`` stores value as NumPy arrays (a tuple as ``name.0``, ``name.1``, ...);
    None is stored as None."""

    def __setitem__(self, name, value):
        if value is None:
            super().__setitem__(name, None)
        elif isinstance(value, tuple):
            for i, v in enumerate(value):
                self[f"{name}.{i}"] = v
        else:
            super().__setitem__(name, onp.array(value))


def run(name, nt, stax, predict, data, as_jax=False):
    """Run snippet ``name`` with the given library modules: (Recorder of results, exception or None).

    ``as_jax``: the snippet's data arrive as JAX arrays rather than NumPy arrays."""
    fn, meta = SNIPPETS[name]
    out = Recorder()
    with jax_mode(meta["x64"], meta["user_splits"]):
        convert = np.asarray if as_jax else onp.array
        try:
            fn(nt, stax, predict, {k: convert(v) for k, v in data.items()}, out)
        except Exception as e:  # noqa: BLE001 - reported by the caller with the results so far
            return out, e
    return out, None


# ---------------------------------------------------------------------------------------------- README


@snippet()
def readme_infinite_kernel(nt, stax, predict, data, out):
    """README.md "Infinitely wide networks" and "Batching": kernel_fn of Dense-Relu-Dense-Relu-Dense, nt.batch."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512), stax.Relu(),
        stax.Dense(512), stax.Relu(),
        stax.Dense(1)
    )
    x1 = np.asarray(data["x1"])
    x2 = np.asarray(data["x2"])

    out["nngp"] = kernel_fn(x1, x2, 'nngp')
    out["ntk"] = kernel_fn(x1, x2, 'ntk')
    both = kernel_fn(x1, x2, ('nngp', 'ntk'))
    out["both.nngp"] = both.nngp
    out["both.ntk"] = both.ntk
    nngp_11, ntk_11 = kernel_fn(x1, None, ('nngp', 'ntk'))
    out["nngp_11"] = nngp_11
    out["ntk_11"] = ntk_11

    batched_kernel_fn = nt.batch(kernel_fn, batch_size=4)
    out["batched.ntk"] = batched_kernel_fn(x1, x2, 'ntk')
    batched = nt.batch(kernel_fn, batch_size=2, device_count=0, store_on_device=False)(x1, None, ('nngp', 'ntk'))
    out["batched_11.nngp"] = batched.nngp
    out["batched_11.ntk"] = batched.ntk


@snippet()
def readme_predict_ensemble(nt, stax, predict, data, out):
    """README.md "Infinitely wide networks" (inference): nt.predict.gradient_descent_mse_ensemble, t = inf and finite."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512), stax.Relu(),
        stax.Dense(512), stax.Relu(),
        stax.Dense(1)
    )
    x_train, x_test = np.asarray(data["x1"]), np.asarray(data["x2"])
    y_train = np.asarray(data["y_train"])

    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train)
    out["y_test_nngp"] = predict_fn(x_test=x_test, get='nngp')
    out["y_test_ntk"] = predict_fn(x_test=x_test, get='ntk')
    both = predict_fn(x_test=x_test, get=('nngp', 'ntk'))
    out["both_equal"] = (np.all(both.nngp == out["y_test_nngp"]), np.all(both.ntk == out["y_test_ntk"]))
    y_test_nngp, y_test_ntk = predict_fn(x_test=x_test, get=('nngp', 'ntk'))
    out["unpacked"] = (y_test_nngp, y_test_ntk)
    out["y_test_ntk_t10"] = predict_fn(t=10., x_test=x_test, get='ntk')
    out["y_train_ntk_t10"] = predict_fn(t=10., get='ntk')


@snippet()
def readme_empirical_predict(nt, stax, predict, data, out):
    """README.md "Finite-width" section: nt.empirical_ntk_fn + nt.predict.gradient_descent_mse at t = 5."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(256, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(256, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(3, W_std=1.5, b_std=0.05)
    )
    x_train, x_test = np.asarray(data["x1"]), np.asarray(data["x2"])
    y_train = np.asarray(data["y_train"])
    key = random.PRNGKey(1)
    _, params = init_fn(key, input_shape=x_train.shape)

    ntk_train_train = nt.empirical_ntk_fn(apply_fn)(x_train, None, params)
    ntk_test_train = nt.empirical_ntk_fn(apply_fn)(x_test, x_train, params)
    out["ntk_train_train"] = ntk_train_train
    out["ntk_test_train"] = ntk_test_train

    mse_predictor = nt.predict.gradient_descent_mse(ntk_train_train, y_train)
    t = 5.
    y_train_0 = apply_fn(params, x_train)
    y_test_0 = apply_fn(params, x_test)
    out["y_train_0"] = y_train_0
    out["y_test_0"] = y_test_0
    y_train_t, y_test_t = mse_predictor(t, y_train_0, y_test_0, ntk_test_train)
    out["y_train_t"] = y_train_t
    out["y_test_t"] = y_test_t
    out["y_test_inf"] = mse_predictor(None, y_train_0, y_test_0, ntk_test_train)[1]


@snippet()
def readme_linearize_taylor(nt, stax, predict, data, out):
    """README.md "Linearized / Taylor-expanded networks": nt.linearize and nt.taylor_expand at moved params."""
    init_fn, apply_fn, _ = stax.serial(
        stax.Dense(128, W_std=1.3, b_std=0.1), stax.Erf(),
        stax.Dense(2, W_std=1.3, b_std=0.1)
    )
    x = np.asarray(data["x1"])
    _, params = init_fn(random.PRNGKey(0), x.shape)
    _, params_new = init_fn(random.PRNGKey(1), x.shape)
    new_params = jax.tree_util.tree_map(lambda p, q: p + 0.1 * q, params, params_new)

    f_lin = nt.linearize(apply_fn, params)
    out["f_lin_at_params"] = f_lin(params, x)
    out["f_lin"] = f_lin(new_params, x)
    out["mse_lin"] = np.mean((apply_fn(new_params, x) - f_lin(new_params, x)) ** 2)
    grad_lin = grad(lambda p: np.sum(f_lin(p, x) ** 2))(new_params)
    out["grad_lin"] = tuple(jax.tree_util.tree_leaves(grad_lin))

    f_2 = nt.taylor_expand(apply_fn, params, 2)
    out["f_taylor2"] = f_2(new_params, x)
    f_1 = nt.taylor_expand(apply_fn, params, 1)
    out["f_taylor1"] = f_1(new_params, x)


@snippet()
def readme_monte_carlo(nt, stax, predict, data, out):
    """README.md / monte_carlo.py docstring: nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples)."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(64, W_std=1.5, b_std=0.1), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.1)
    )
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    key = random.PRNGKey(2)

    mc_kernel_fn = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples=8)
    out["ntk_8"] = mc_kernel_fn(x1, x2, 'ntk')
    k = mc_kernel_fn(x1, None, ('nngp', 'ntk'))
    out["nngp_8_11"] = k.nngp
    out["ntk_8_11"] = k.ntk
    running = nt.monte_carlo_kernel_fn(init_fn, apply_fn, key, n_samples=[1, 2, 4])
    for n, ntk in zip([1, 2, 4], running(x1, x2, 'ntk')):
        out[f"ntk_running_{n}"] = ntk


@snippet()
def readme_jit_kernel(nt, stax, predict, data, out):
    """README.md ("jit" note) / stax docstrings: jax.jit(kernel_fn, static_argnames='get') and a jitted lambda."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(1, W_std=1.5, b_std=0.05)
    )
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    kernel_fn_jit = jax.jit(kernel_fn, static_argnames='get')
    out["ntk"] = kernel_fn_jit(x1, x2, get='ntk')
    k = kernel_fn_jit(x1, x2, get=('nngp', 'ntk'))
    out["both"] = (k.nngp, k.ntk)
    ntk_fn = jax.jit(lambda x1, x2: kernel_fn(x1, x2, 'ntk'))
    out["ntk_lambda"] = ntk_fn(x1, x2)
    out["ntk_static_argnums"] = jit(kernel_fn, static_argnums=(2,))(x1, x2, 'ntk')


# -------------------------------------------------------------------------------------------- examples/


def _accuracy(y, y_hat):
    """examples/util.py."""
    target_class = np.argmax(y, axis=1)
    predicted_class = np.argmax(y_hat, axis=1)
    return np.mean(predicted_class == target_class)


def _summary(out, name, labels, net_p, lin_p, loss):
    """examples/util.py print_summary, recording instead of printing."""
    out[f"{name}.net_accuracy"] = _accuracy(net_p, labels)
    out[f"{name}.net_loss"] = loss(net_p, labels)
    if lin_p is not None:
        out[f"{name}.lin_accuracy"] = _accuracy(lin_p, labels)
        out[f"{name}.lin_loss"] = loss(lin_p, labels)
        out[f"{name}.rmse"] = np.sqrt(np.mean((net_p - lin_p) ** 2))


def _minibatch(x_train, y_train, batch_size, train_epochs, permutations):
    """examples/datasets.py minibatch; the per-epoch permutations come from ``data`` (jax.random's
    permutation algorithm is not the same in every jax version)."""
    epoch = 0
    start = 0
    while epoch < train_epochs:
        end = start + batch_size
        if end > x_train.shape[0]:
            permutation = permutations[epoch]
            x_train = x_train[permutation]
            y_train = y_train[permutation]
            epoch += 1
            start = 0
            continue
        yield x_train[start:end], y_train[start:end]
        start = start + batch_size


@snippet()
def infinite_fcn(nt, stax, predict, data, out):
    """examples/infinite_fcn.py: nt.batch(kernel_fn) + gradient_descent_mse_ensemble(diag_reg=1e-3), NNGP and NTK."""
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]

    # Build the infinite network.
    _, _, kernel_fn = stax.serial(
        stax.Dense(1, 2., 0.05),
        stax.Relu(),
        stax.Dense(1, 2., 0.05)
    )

    # Optionally, compute the kernel in batches, in parallel.
    kernel_fn = nt.batch(kernel_fn, device_count=0, batch_size=8)

    # Bayesian and infinite-time gradient descent inference with infinite network.
    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=1e-3)
    fx_test_nngp, fx_test_ntk = predict_fn(x_test=x_test)
    fx_test_nngp.block_until_ready()
    fx_test_ntk.block_until_ready()
    out["fx_test_nngp"] = fx_test_nngp
    out["fx_test_ntk"] = fx_test_ntk

    # Print out accuracy and loss for infinite network predictions.
    loss = lambda fx, y_hat: 0.5 * np.mean((fx - y_hat) ** 2)
    _summary(out, 'NNGP test', y_test, fx_test_nngp, None, loss)
    _summary(out, 'NTK test', y_test, fx_test_ntk, None, loss)


@snippet()
def weight_space(nt, stax, predict, data, out):
    """examples/weight_space.py: momentum + cross-entropy training of apply_fn and of nt.linearize's f_lin."""
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    learning_rate, batch_size, train_epochs = 1.0, 8, 2

    # Build the network
    init_fn, apply_fn, _ = stax.serial(
        stax.Dense(256, 1., 0.05),
        stax.Erf(),
        stax.Dense(10, 1., 0.05))

    key = random.PRNGKey(0)
    _, params = init_fn(key, (1, x_train.shape[1]))

    # Linearize the network about its initial parameters.
    apply_lin = nt.linearize(apply_fn, params)

    # Create and initialize an optimizer for both f and f_lin.
    opt_init, opt_apply, get_params = optimizers.momentum(learning_rate, 0.9)
    opt_apply = jit(opt_apply)

    state = opt_init(params)
    state_lin = opt_init(params)

    # Create a cross-entropy loss function.
    loss = lambda fx, y_hat: -np.mean(log_softmax(fx) * y_hat)

    # Specialize the loss function to compute gradients for both linearized and full networks.
    grad_loss = jit(grad(lambda params, x, y: loss(apply_fn(params, x), y)))
    grad_loss_lin = jit(grad(lambda params, x, y: loss(apply_lin(params, x), y)))

    # Train the network (the example trains f and f_lin in one loop; two loops here record f's
    # results before f_lin's).
    losses = []
    for i, (x, y) in enumerate(_minibatch(x_train, y_train, batch_size, train_epochs, data["permutations"])):
        params = get_params(state)
        state = opt_apply(i, grad_loss(params, x, y), state)
        losses += [loss(apply_fn(params, x), y)]
    out["losses"] = np.stack(losses)
    out["params"] = tuple(jax.tree_util.tree_leaves(get_params(state)))
    out["train.net"] = apply_fn(get_params(state), x_train)

    losses_lin = []
    for i, (x, y) in enumerate(_minibatch(x_train, y_train, batch_size, train_epochs, data["permutations"])):
        params_lin = get_params(state_lin)
        state_lin = opt_apply(i, grad_loss_lin(params_lin, x, y), state_lin)
        losses_lin += [loss(apply_lin(params_lin, x), y)]
    out["losses_lin"] = np.stack(losses_lin)

    # Print out summary data comparing the linear / nonlinear model.
    params, params_lin = get_params(state), get_params(state_lin)
    _summary(out, 'train', y_train, apply_fn(params, x_train), apply_lin(params_lin, x_train), loss)
    _summary(out, 'test', y_test, apply_fn(params, x_test), apply_lin(params_lin, x_test), loss)


@snippet()
def function_space(nt, stax, predict, data, out):
    """examples/function_space.py: SGD on MSE vs nt.predict.gradient_descent_mse on nt.batch(empirical_ntk_fn)."""
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    learning_rate, train_time = 1.0, 100.0

    # Build the network
    init_fn, apply_fn, _ = stax.serial(
        stax.Dense(256, 1., 0.05),
        stax.Erf(),
        stax.Dense(10, 1., 0.05))

    key = random.PRNGKey(0)
    _, params = init_fn(key, (-1, x_train.shape[1]))

    # Create and initialize an optimizer.
    opt_init, opt_apply, get_params = optimizers.sgd(learning_rate)
    state = opt_init(params)

    # Create an mse loss function and a gradient function.
    loss = lambda fx, y_hat: 0.5 * np.mean((fx - y_hat) ** 2)
    grad_loss = jit(grad(lambda params, x, y: loss(apply_fn(params, x), y)))

    # Create an MSE predictor to solve the NTK equation in function space.
    ntk = nt.batch(nt.empirical_ntk_fn(apply_fn, vmap_axes=0), batch_size=8, device_count=0)
    g_dd = ntk(x_train, None, params)
    g_td = ntk(x_test, x_train, params)
    out["g_dd"] = g_dd
    out["g_td"] = g_td
    predictor = nt.predict.gradient_descent_mse(g_dd, y_train)

    # Get initial values of the network in function space.
    fx0_train = apply_fn(params, x_train)
    fx0_test = apply_fn(params, x_test)

    # Train the network.
    train_steps = int(train_time // learning_rate)
    for i in range(train_steps):
        params = get_params(state)
        state = opt_apply(i, grad_loss(params, x_train, y_train), state)

    # Get predictions from analytic computation.
    fx_train, fx_test = predictor(train_time, fx0_train, fx0_test, g_td)
    out["fx_train"] = fx_train
    out["fx_test"] = fx_test
    out["net_train"] = apply_fn(params, x_train)
    out["net_test"] = apply_fn(params, x_test)

    # Print out summary data comparing the linear / nonlinear model.
    _summary(out, 'train', y_train, apply_fn(params, x_train), fx_train, loss)
    _summary(out, 'test', y_test, apply_fn(params, x_test), fx_test, loss)


@snippet()
def empirical_ntk_implementations(nt, stax, predict, data, out):
    """examples/empirical_ntk.py (fully-connected): nt.empirical_ntk_fn, trace_axes=(), vmap_axes=0, each NtkImplementation."""
    key3 = random.PRNGKey(3)
    x1 = np.asarray(data["x1"])
    x2 = np.asarray(data["x2"])

    init_fn, f, _ = stax.serial(
        stax.Dense(32, W_std=1.4, b_std=0.1),
        stax.Relu(),
        stax.Dense(32, W_std=1.4, b_std=0.1),
        stax.Relu(),
        stax.Dense(10, W_std=1.4, b_std=0.1)
    )

    _, params = init_fn(key3, x1.shape)
    kwargs = dict(
        f=f,
        trace_axes=(),
        vmap_axes=0,
    )

    jacobian_contraction = nt.empirical_ntk_fn(**kwargs, implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
    out["ntk_jc"] = jacobian_contraction(x2, x1, params)

    ntk_vector_products = nt.empirical_ntk_fn(**kwargs, implementation=nt.NtkImplementation.NTK_VECTOR_PRODUCTS)
    out["ntk_vp"] = ntk_vector_products(x2, x1, params)

    structured_derivatives = nt.empirical_ntk_fn(**kwargs,
                                                 implementation=nt.NtkImplementation.STRUCTURED_DERIVATIVES)
    out["ntk_sd"] = structured_derivatives(x2, x1, params)

    auto = nt.empirical_ntk_fn(**kwargs, implementation=nt.NtkImplementation.AUTO)
    out["ntk_auto"] = auto(x2, x1, params)

    # Integer implementations, the default trace_axes=(-1,) and diagonal_axes.
    for implementation in (1, 2, 3):
        out[f"ntk_traced_{implementation}"] = nt.empirical_ntk_fn(f, vmap_axes=0, implementation=implementation)(
            x1, x2, params)
    out["ntk_diagonal_axes"] = nt.empirical_ntk_fn(f, trace_axes=(), diagonal_axes=(-1,))(x1, None, params)


@snippet()
def empirical_ntk_jit(nt, stax, predict, data, out):
    """empirical.py docstrings / examples/empirical_ntk.py: jax.jit(nt.empirical_ntk_fn(f, ..., implementation=k))."""
    init_fn, f, _ = stax.serial(
        stax.Dense(32, W_std=1.4, b_std=0.1), stax.Relu(),
        stax.Dense(3, W_std=1.4, b_std=0.1)
    )
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    _, params = init_fn(random.PRNGKey(4), x1.shape)
    for implementation in (1, 2, 3):
        ntk_fn = jit(nt.empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=implementation))
        out[f"ntk_{implementation}"] = ntk_fn(x1, x2, params)
    ntk_fn = jit(nt.empirical_ntk_fn(f))
    out["ntk_traced"] = ntk_fn(x1, None, params)


@snippet()
def empirical_kernels(nt, stax, predict, data, out):
    """empirical.py docstrings / tests/empirical_test.py: nt.empirical_nngp_fn, nt.empirical_kernel_fn(get=...)."""
    init_fn, apply_fn, _ = stax.serial(
        stax.Dense(64, W_std=1.2, b_std=0.3), stax.Erf(),
        stax.Dense(64, W_std=1.2, b_std=0.3), stax.Relu(),
        stax.Dense(4, W_std=1.2, b_std=0.3)
    )
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    _, params = init_fn(random.PRNGKey(5), x1.shape)

    out["nngp"] = nt.empirical_nngp_fn(apply_fn)(x1, x2, params)
    out["nngp_full"] = nt.empirical_nngp_fn(apply_fn, trace_axes=())(x1, None, params)
    kernel_fn = nt.empirical_kernel_fn(apply_fn)
    out["ntk"] = kernel_fn(x1, x2, 'ntk', params)
    k = kernel_fn(x1, None, ('nngp', 'ntk'), params)
    out["both"] = (k.nngp, k.ntk)
    nngp, ntk = kernel_fn(x1, x2, None, params)
    out["get_none"] = (nngp, ntk)
    out["ntk_keyword"] = kernel_fn(x1, x2, get='ntk', params=params)


def _plain_f(params, x):
    """A JAX function that is not a stax network (tests/empirical_test.py style)."""
    w1, w2, b = params
    return np.tanh(x @ w1) @ w2 + b


@snippet()
def empirical_plain_jax(nt, stax, predict, data, out):
    """tests/empirical_test.py (testLinearization, testNTKAgainstDirect): nt.linearize / empirical_ntk_fn of a plain JAX f."""
    w1 = np.asarray(data["w1"])
    w2 = np.asarray(data["w2"])
    b = np.asarray(data["b"])
    params = (w1, w2, b)
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])

    out["ntk"] = nt.empirical_ntk_fn(_plain_f)(x1, x2, params)
    out["ntk_full"] = nt.empirical_ntk_fn(_plain_f, trace_axes=(), implementation=2)(x1, x2, params)
    f_lin = nt.linearize(_plain_f, params)
    moved = jax.tree_util.tree_map(lambda p: p * 1.1, params)
    out["f_lin"] = f_lin(moved, x1)
    out["taylor2"] = nt.taylor_expand(_plain_f, params, 2)(moved, x1)


# ---------------------------------------------------------------------------------------------- notebooks


def _cookbook_network(stax):
    return stax.serial(
        stax.Dense(256, W_std=1.5, b_std=0.05), stax.Erf(),
        stax.Dense(256, W_std=1.5, b_std=0.05), stax.Erf(),
        stax.Dense(1, W_std=1.5, b_std=0.05)
    )


@snippet(user_splits=True)
def cookbook_infinite(nt, stax, predict, data, out):
    """notebooks/neural_tangents_cookbook.ipynb: jit(kernel_fn, static_argnums=(2,)), prior draws, ensemble with compute_cov."""
    train_xs, train_ys, test_xs, test_ys = data["train_xs"], data["train_ys"], data["test_xs"], data["test_ys"]
    key = random.PRNGKey(10)
    key, x_key, y_key = random.split(key, 3)

    init_fn, apply_fn, kernel_fn = _cookbook_network(stax)
    apply_fn = jit(apply_fn)
    kernel_fn = jit(kernel_fn, static_argnums=(2,))

    prior_draws = []
    for _ in range(4):
        key, net_key = random.split(key)
        _, params = init_fn(net_key, (-1, 1))
        prior_draws += [apply_fn(params, test_xs)]
    out["prior_draws"] = np.stack(prior_draws)

    kernel = kernel_fn(test_xs, test_xs, 'nngp')
    std_dev = np.sqrt(np.diag(kernel))
    out["std_dev"] = std_dev

    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, train_xs, train_ys, diag_reg=1e-4)
    nngp_mean, nngp_covariance = predict_fn(x_test=test_xs, get='nngp', compute_cov=True)
    out["nngp_mean"] = np.reshape(nngp_mean, (-1,))
    out["nngp_std"] = np.sqrt(np.diag(nngp_covariance))
    ntk_mean, ntk_covariance = predict_fn(x_test=test_xs, get='ntk', compute_cov=True)
    out["ntk_mean"] = np.reshape(ntk_mean, (-1,))
    out["ntk_std"] = np.sqrt(np.diag(ntk_covariance))

    def loss_fn(predict_fn, ys, t, xs=None):
        mean, cov = predict_fn(t=t, get='ntk', x_test=xs, compute_cov=True)
        mean = np.reshape(mean, mean.shape[:1] + (-1,))
        var = np.diagonal(cov, axis1=1, axis2=2)
        ys = np.reshape(ys, (1, -1))
        mean_predictions = 0.5 * np.mean(ys ** 2 - 2 * mean * ys + var + mean ** 2, axis=1)
        return mean_predictions

    ts = np.linspace(0., 1000., 11)
    out["ntk_train_loss_mean"] = loss_fn(predict_fn, train_ys, ts)
    out["ntk_test_loss_mean"] = loss_fn(predict_fn, test_ys, ts, test_xs)


def _cookbook_training(stax, data):
    """The cookbook's optimizer, loss and gradient; shared by its two training sections."""
    init_fn, apply_fn, kernel_fn = _cookbook_network(stax)
    apply_fn = jit(apply_fn)
    learning_rate = 0.1
    opt_init, opt_update, get_params = optimizers.sgd(learning_rate)
    opt_update = jit(opt_update)
    loss = jit(lambda params, x, y: 0.5 * np.mean((apply_fn(params, x) - y) ** 2))
    grad_loss = jit(lambda state, x, y: grad(loss)(get_params(state), x, y))
    return init_fn, apply_fn, opt_init, opt_update, get_params, loss, grad_loss


@snippet(user_splits=True)
def cookbook_train(nt, stax, predict, data, out):
    """notebooks/neural_tangents_cookbook.ipynb "Training a network": jitted SGD on MSE, loss curves."""
    train = (data["train_xs"], data["train_ys"])
    test = (data["test_xs"], data["test_ys"])
    init_fn, apply_fn, opt_init, opt_update, get_params, loss, grad_loss = _cookbook_training(stax, data)
    key = random.PRNGKey(10)
    key, net_key = random.split(key)
    _, params = init_fn(net_key, (-1, 1))

    training_steps = 200
    train_losses = []
    test_losses = []
    opt_state = opt_init(params)
    for i in range(training_steps):
        opt_state = opt_update(i, grad_loss(opt_state, *train), opt_state)
        train_losses += [loss(get_params(opt_state), *train)]
        test_losses += [loss(get_params(opt_state), *test)]
    out["train_losses"] = np.stack(train_losses)
    out["test_losses"] = np.stack(test_losses)
    out["fx_test"] = apply_fn(get_params(opt_state), test[0])


@snippet(user_splits=True)
def cookbook_ensemble(nt, stax, predict, data, out):
    """notebooks/neural_tangents_cookbook.ipynb "Training an ensemble": vmap(train_network)(random.split(key, n))."""
    train = (data["train_xs"], data["train_ys"])
    test = (data["test_xs"], data["test_ys"])
    init_fn, apply_fn, opt_init, opt_update, get_params, loss, grad_loss = _cookbook_training(stax, data)
    training_steps = 50

    def train_network(key):
        train_losses = []
        test_losses = []
        _, params = init_fn(key, (-1, 1))
        opt_state = opt_init(params)
        for i in range(training_steps):
            train_losses += [np.reshape(loss(get_params(opt_state), *train), (1,))]
            test_losses += [np.reshape(loss(get_params(opt_state), *test), (1,))]
            opt_state = opt_update(i, grad_loss(opt_state, *train), opt_state)
        train_losses = np.concatenate(train_losses)
        test_losses = np.concatenate(test_losses)
        return get_params(opt_state), train_losses, test_losses

    key = random.PRNGKey(10)
    ensemble_size = 4
    ensemble_key = random.split(key, ensemble_size)
    params, train_loss, test_loss = vmap(train_network)(ensemble_key)
    out["train_loss"] = train_loss
    out["test_loss"] = test_loss
    out["ensemble_fx_test"] = vmap(apply_fn, (0, None))(params, test[0])


@snippet()
def phase_diagram(nt, stax, predict, data, out):
    """notebooks/phase_diagram.ipynb: q-map / c-map fixed points of Dense-Erf via kernel_fn, χ = grad(c_map)."""
    def fixed_point(f, initial_value, n_steps=15):
        x = initial_value
        for _ in range(n_steps):
            x = f(x)
        return x

    def c_map(W_var, b_var):
        W_std = np.sqrt(W_var)
        b_std = np.sqrt(b_var)
        # Create a single layer of a network as an affine transformation composed with an Erf nonlinearity.
        kernel_fn = stax.serial(stax.Dense(1024, W_std, b_std), stax.Erf())[2]

        def q_map_fn(q):
            return kernel_fn(np.sqrt(q) * np.ones((1, 1)), None, 'nngp')[0, 0]

        qstar = fixed_point(q_map_fn, 1.0)

        def c_map_fn(c):
            x = np.sqrt(2 * qstar) * np.array([[1., 0.], [c, np.sqrt(1 - c ** 2)]])
            return kernel_fn(x, None, 'nngp')[1, 0] / qstar

        return qstar, c_map_fn

    qstar, c_map_fn = c_map(3.0, 0.05)
    out["qstar"] = qstar
    out["c_map_half"] = c_map_fn(0.5)
    cstar = fixed_point(c_map_fn, 0.1)
    out["cstar"] = cstar
    out["chi_c"] = grad(c_map_fn)(0.5)

    chis = [[grad(c_map(W_var, b_var)[1])(0.5) for b_var in (0.05,)] for W_var in (1.0, 2.5)]
    out["chi_grid"] = np.array(chis)

    x = np.asarray(data["x1"])

    def ntk_sum(W_std):
        kernel_fn = stax.serial(stax.Dense(1, W_std, 0.1), stax.Erf(), stax.Dense(1, W_std, 0.1))[2]
        return np.sum(kernel_fn(x, None, 'ntk'))

    out["dntk_dW_std"] = grad(ntk_sum)(1.5)


# ------------------------------------------------------------------------- tests/ and API documentation


@snippet()
def predict_test_mse_gd(nt, stax, predict, data, out):
    """tests/predict_test.py testNTKMSEPrediction: SGD on a wide net vs predict.gradient_descent_mse on its empirical NTK."""
    x_train, y_train, x_test = np.asarray(data["x1"]), np.asarray(data["y_train"]), np.asarray(data["x2"])
    key = random.PRNGKey(7)
    init_fn, f, _ = stax.serial(stax.Dense(256, 2., 0.5), stax.Relu(), stax.Dense(2, 2., 0.5))
    _, params = init_fn(key, x_train.shape)

    loss = lambda y, y_hat: 0.5 * np.mean((y - y_hat) ** 2)
    grad_loss = lambda params, x: grad(lambda params: loss(f(params, x), y_train))(params)

    learning_rate = 0.5
    training_steps = 20
    opt_init, opt_update, get_params = optimizers.sgd(learning_rate)
    opt_state = opt_init(params)

    ntk = nt.empirical_ntk_fn(f, vmap_axes=0)
    g_dd = ntk(x_train, None, params)
    g_td = ntk(x_test, x_train, params)

    predictor = predict.gradient_descent_mse(g_dd, y_train, learning_rate=learning_rate)
    fx_initial_train = f(params, x_train)
    fx_initial_test = f(params, x_test)

    for i in range(training_steps):
        params = get_params(opt_state)
        opt_state = opt_update(i, grad_loss(params, x_train), opt_state)
    params = get_params(opt_state)

    out["fx_train_nonlin"] = f(params, x_train)
    out["fx_test_nonlin"] = f(params, x_test)
    fx_train_predict, fx_test_predict = predictor(training_steps, fx_initial_train, fx_initial_test, g_td)
    out["fx_train_predict"] = fx_train_predict
    out["fx_test_predict"] = fx_test_predict
    out["fx_train_discrete"] = predictor(np.arange(3.), fx_initial_train, None, g_td)


@snippet(user_splits=True)
def vmap_ensemble(nt, stax, predict, data, out):
    """tests/predict_test.py / cookbook ensembles: vmap of init_fn and apply_fn over random.split keys, one vmapped SGD step."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(128, W_std=1.5, b_std=0.05), stax.Relu(),
        stax.Dense(2, W_std=1.5, b_std=0.05)
    )
    x, y = np.asarray(data["x1"]), np.asarray(data["y_train"])
    keys = random.split(random.PRNGKey(0), 6)
    out["keys"] = keys

    params = vmap(lambda key: init_fn(key, x.shape)[1])(keys)
    fx = vmap(apply_fn, (0, None))(params, x)
    out["fx"] = fx
    out["ensemble_mean"] = np.mean(fx, axis=0)
    out["ensemble_cov"] = np.einsum('kio,kjo->ij', fx, fx) / (fx.shape[0] * fx.shape[2])

    loss = lambda params, x, y: 0.5 * np.mean((apply_fn(params, x) - y) ** 2)
    grads = vmap(grad(loss), (0, None, None))(params, x, y)
    stepped = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, grads)
    out["fx_stepped"] = jit(vmap(apply_fn, (0, None)))(stepped, x)

    one_by_one = [init_fn(key, x.shape)[1] for key in keys]
    out["fx_one_by_one"] = np.stack([apply_fn(p, x) for p in one_by_one])


@snippet()
def predict_test_ensemble(nt, stax, predict, data, out):
    """tests/predict_test.py testPredictOnCPU / test_gradient_descent_mse_ensemble: array t, compute_cov, train and test."""
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.5, 0.1), stax.Erf(), stax.Dense(1, 1.5, 0.1))
    x_train, y_train, x_test = np.asarray(data["x1"]), np.asarray(data["y_train"]), np.asarray(data["x2"])
    predictor = predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=1e-2)
    ts = np.logspace(-2, 4, 5)
    mean, cov = predictor(ts, x_test, 'ntk', compute_cov=True)
    out["ntk_mean_ts"] = mean
    out["ntk_cov_ts"] = cov
    nngp = predictor(ts, x_test, 'nngp', compute_cov=True)
    out["nngp_ts"] = (nngp.mean, nngp.covariance)
    out["inf"] = tuple(predictor(None, x_test, ('nngp', 'ntk')))
    g = predictor(None, x_test, ('nngp', 'ntk'), compute_cov=True)
    out["inf_cov"] = (g.nngp.mean, g.nngp.covariance, g.ntk.mean, g.ntk.covariance)
    out["train_t1"] = predictor(1., None, 'ntk')
    train_g = predictor(1., None, 'ntk', compute_cov=True)
    out["train_t1_cov"] = (train_g.mean, train_g.covariance)

    # The same predictions from the kernels, by gradient_descent_mse.
    k_dd = kernel_fn(x_train, None, 'ntk')
    k_td = kernel_fn(x_test, x_train, 'ntk')
    out["mse_ts"] = predict.gradient_descent_mse(k_dd, y_train, diag_reg=1e-2)(ts, 0., 0., k_td)


@snippet()
def predict_gradient_descent(nt, stax, predict, data, out):
    """predict.py gradient_descent docstring / predict_test.py testNTKGDPrediction: cross-entropy dynamics, with momentum."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(256, 1.5, 0.1), stax.Relu(), stax.Dense(3, 1.5, 0.1))
    x_train, x_test = np.asarray(data["x1"]), np.asarray(data["x2"])
    y_train = np.asarray(data["y_onehot"])
    _, params = init_fn(random.PRNGKey(8), x_train.shape)

    k_train_train = kernel_fn(x_train, None, 'ntk')
    k_test_train = kernel_fn(x_test, x_train, 'ntk')
    cross_entropy = lambda fx, y_hat: -np.mean(log_softmax(fx) * y_hat)
    fx_train_0 = apply_fn(params, x_train)
    fx_test_0 = apply_fn(params, x_test)

    learning_rate = 1e-1
    predict_fn = nt.predict.gradient_descent(cross_entropy, k_train_train, y_train, learning_rate)
    ts = np.array([0., 1., 10., 100.])
    fx_train_t, fx_test_t = predict_fn(ts, fx_train_0, fx_test_0, k_test_train)
    out["fx_train_t"] = fx_train_t
    out["fx_test_t"] = fx_test_t
    out["fx_train_10"] = predict_fn(10., fx_train_0)

    momentum = 0.9
    predict_fn = nt.predict.gradient_descent(cross_entropy, k_train_train, y_train, learning_rate, momentum)
    fx_train_t, fx_test_t = predict_fn(ts, fx_train_0, fx_test_0, k_test_train)
    out["momentum_fx_train_t"] = fx_train_t
    out["momentum_fx_test_t"] = fx_test_t

    mse = lambda fx, y_hat: 0.5 * np.mean((fx - y_hat) ** 2)
    predict_mse = nt.predict.gradient_descent(mse, k_train_train, y_train, learning_rate)
    out["mse_general"] = predict_mse(ts, fx_train_0, fx_test_0, k_test_train)
    out["mse_closed_form"] = nt.predict.gradient_descent_mse(k_train_train, y_train, learning_rate)(
        ts, fx_train_0, fx_test_0, k_test_train)


@snippet()
def gp_inference(nt, stax, predict, data, out):
    """predict.py gp_inference docstring: Kernel namedtuples in, NNGP / NTK posterior means and covariances out."""
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.2, 0.2), stax.Relu(), stax.Dense(1, 1.2, 0.2))
    x_train, y_train, x_test = np.asarray(data["x1"]), np.asarray(data["y_train"]), np.asarray(data["x2"])
    get = ('nngp', 'ntk')
    k_train_train = kernel_fn(x_train, None, get)
    k_test_train = kernel_fn(x_test, x_train, get)
    k_test_test = kernel_fn(x_test, None, get)

    predict_fn = nt.predict.gp_inference(k_train_train, y_train, diag_reg=1e-4)
    nngp_test, ntk_test = predict_fn(get, k_test_train, k_test_test)
    out["nngp"] = (nngp_test.mean, nngp_test.covariance)
    out["ntk"] = (ntk_test.mean, ntk_test.covariance)
    out["nngp_mean"] = predict_fn('nngp', k_test_train)
    out["nngp_arrays"] = nt.predict.gp_inference(k_train_train.nngp, y_train, diag_reg=1e-4)(
        'nngp', k_test_train.nngp)


@snippet()
def kernel_fields(nt, stax, predict, data, out):
    """Kernel API (utils/kernel.py, README "Kernel"): get=None fields, get='cov1', case-insensitive get."""
    _, _, kernel_fn = stax.serial(stax.Dense(512, 1.5, 0.05), stax.Relu(), stax.Dense(1, 1.5, 0.05))
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])

    k = kernel_fn(x1, x2)
    out["nngp"] = k.nngp
    out["ntk"] = k.ntk
    out["cov1"] = k.cov1
    out["cov2"] = k.cov2
    out["shape1"] = k.shape1
    out["shape2"] = k.shape2
    k11 = kernel_fn(x1, None)
    out["cov2_x2_none"] = k11.cov2
    out["get_cov1"] = kernel_fn(x1, x2, get='cov1')
    out["get_NTK"] = kernel_fn(x1, x2, get='NTK')
    both = kernel_fn(x1, x2, get=('NNGP', 'ntk'))
    out["both_fields"] = (both.nngp, both.ntk)


@snippet()
def kernel_composition(nt, stax, predict, data, out):
    """tests/stax_test.py test_composition_dense: kernel_fn_2(kernel_fn_1(x1, x2)) == serial's kernel_fn."""
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    Dense = stax.Dense(1, 2., 0.5)
    Relu = stax.Relu()

    composed_ker_fn = stax.serial(Dense, Relu, Dense)[2]
    ker_out_default = composed_ker_fn(x1, x2)
    out["composed"] = (ker_out_default.nngp, ker_out_default.ntk)

    ker_fn = stax.serial(Dense, Relu)[2]
    ker_in = ker_fn(x1, x2)
    ker_out = Dense[2](ker_in)
    out["two_step"] = (ker_out.nngp, ker_out.ntk)
    kernel_fn_1 = stax.serial(stax.Dense(1, 1.5), stax.Erf())[2]
    kernel_fn_2 = stax.serial(stax.Dense(1, 1.3, 0.1), stax.Relu(), stax.Dense(1, 1.3, 0.1))[2]
    out["erf_then_relu"] = kernel_fn_2(kernel_fn_1(x1, x2)).ntk


@snippet()
def residual_branching(nt, stax, predict, data, out):
    """README.md "Infinitely WideResnet" (fully-connected): FanOut / parallel / FanInSum; FanInProd, FanInConcat."""
    def ResBlock(width, W_std=1.5, b_std=0.1):
        Main = stax.serial(stax.Relu(), stax.Dense(width, W_std, b_std), stax.Relu(), stax.Dense(width, W_std, b_std))
        Shortcut = stax.Identity()
        return stax.serial(stax.FanOut(2), stax.parallel(Main, Shortcut), stax.FanInSum())

    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(64, 1.5, 0.1), ResBlock(64), ResBlock(64), stax.Relu(), stax.Dense(2, 1.5, 0.1))
    out["resnet_kernel"] = tuple(kernel_fn(x1, x2, ('nngp', 'ntk')))
    _, params = init_fn(random.PRNGKey(11), x1.shape)
    out["resnet_apply"] = apply_fn(params, x1)
    out["resnet_empirical_ntk"] = nt.empirical_ntk_fn(apply_fn)(x1, x2, params)

    for name, fan_in in (("prod", stax.FanInProd()), ("concat", stax.FanInConcat())):
        init_fn, apply_fn, kernel_fn = stax.serial(
            stax.Dense(64, 1.5, 0.1),
            stax.FanOut(2),
            stax.parallel(stax.serial(stax.Erf(), stax.Dense(64, 1.2, 0.2)),
                          stax.serial(stax.Relu(), stax.Dense(64, 1.1, 0.3))),
            fan_in,
            stax.Dense(64, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))
        out[f"{name}_kernel"] = tuple(kernel_fn(x1, x2, ('nngp', 'ntk')))
        _, params = init_fn(random.PRNGKey(12), x1.shape)
        out[f"{name}_apply"] = apply_fn(params, x1)


def _activation_kernels(stax, data, out, layers):
    """kernel_fn and apply_fn of Dense(256)-φ-Dense(1) for each (label, stax name, arguments) of ``layers``."""
    x1, x2 = np.asarray(data["x1"]), np.asarray(data["x2"])
    for label, name, args in layers:
        layer = getattr(stax, name)(*args)
        init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(256, 1.2, 0.1), layer, stax.Dense(1, 1.2, 0.1))
        out[label] = tuple(kernel_fn(x1, x2, ('nngp', 'ntk')))
        _, params = init_fn(random.PRNGKey(13), x1.shape)
        out[f"{label}.apply"] = apply_fn(params, x1)


@snippet()
def activations(nt, stax, predict, data, out):
    """tests/stax_test.py (ElementwiseTest, ABReluTest, ...): kernel_fn / apply_fn of Dense-φ-Dense, classic φ."""
    _activation_kernels(stax, data, out, [
        ("Relu", "Relu", ()), ("LeakyRelu", "LeakyRelu", (0.1,)), ("Abs", "Abs", ()),
        ("ABRelu", "ABRelu", (-0.3, 1.2)), ("Erf", "Erf", ()), ("Erf_abc", "Erf", (1.3, 0.7, 0.2)),
        ("Sigmoid_like", "Sigmoid_like", ()), ("Gelu", "Gelu", ()), ("Sin", "Sin", ()),
        ("Sin_abc", "Sin", (1.2, 0.8, 0.3)), ("Cos", "Cos", ()),
    ])


@snippet()
def activations_more(nt, stax, predict, data, out):
    """tests/stax_test.py (ElementwiseTest, RbfTest, ...): kernel_fn / apply_fn of Dense-φ-Dense, more of stax's φ."""
    _activation_kernels(stax, data, out, [
        ("Exp", "Exp", ()), ("Exp_ab", "Exp", (0.8, 1.1)), ("Rbf", "Rbf", ()), ("Rbf_gamma", "Rbf", (0.5,)),
        ("Gaussian", "Gaussian", ()), ("Sign", "Sign", ()), ("Monomial2", "Monomial", (2,)),
        ("RectifiedMonomial2", "RectifiedMonomial", (2,)), ("Polynomial", "Polynomial", ([0.1, -0.5, 0.3],)),
    ])


@snippet(x64=False)
def float32_readme(nt, stax, predict, data, out):
    """README.md in float32 (jax's default): kernel_fn, init_fn / apply_fn, SGD steps, gradient_descent_mse_ensemble."""
    init_fn, apply_fn, kernel_fn = stax.serial(
        stax.Dense(256, W_std=1.5, b_std=0.05), stax.Erf(),
        stax.Dense(1, W_std=1.5, b_std=0.05)
    )
    x_train, x_test = np.asarray(data["x1"]), np.asarray(data["x2"])
    y_train = np.asarray(data["y_train"])
    out["dtype_x"] = str(x_train.dtype)
    k = kernel_fn(x_test, x_train, ('nngp', 'ntk'))
    out["kernel"] = (k.nngp, k.ntk)
    out["kernel_dtype"] = str(k.ntk.dtype)

    _, params = init_fn(random.PRNGKey(0), x_train.shape)
    out["params_dtype"] = str(params[0][0].dtype)
    out["fx_0"] = apply_fn(params, x_test)
    opt_init, opt_update, get_params = optimizers.sgd(0.5)
    grad_loss = jit(grad(lambda params, x, y: 0.5 * np.mean((apply_fn(params, x) - y) ** 2)))
    state = opt_init(params)
    for i in range(5):
        state = opt_update(i, grad_loss(get_params(state), x_train, y_train), state)
    out["fx_5"] = apply_fn(get_params(state), x_test)

    predict_fn = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=1e-2)
    out["ntk_inf"] = predict_fn(x_test=x_test, get='ntk')
    out["nngp_t1"] = predict_fn(t=1., x_test=x_test, get='nngp')
