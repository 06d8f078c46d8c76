"""fastntk.spec: the typed network tree that stax builds and every consumer reads."""

import pytest

from fastntk import spec, stax


def test_stax_builds_a_tree_of_typed_nodes():
    net = stax.serial(stax.serial(stax.Dense(4, 1.5, 0.1), stax.Relu()), stax.Identity(), stax.Dense(2))
    tree = net.kernel_fn.spec
    assert isinstance(tree, spec.Serial) and isinstance(tree.layers[0], spec.Serial)
    assert [type(leaf).__name__ for leaf in spec.leaves(tree)] == ["Dense", "Act", "Identity", "Dense"]
    assert tree.layers[0].layers[0] == spec.Dense(4, 1.5, 0.1, "ntk")
    assert net.init_fn.spec is net.apply_fn.spec is tree


def test_shape_inference():
    tree = stax.fc_network(2, width=9, out_dim=3).kernel_fn.spec
    assert spec.output_shape(tree, (10, 4)) == (10, 3)
    assert spec.readout_dim(tree) == 3
    assert spec.readout_dim(stax.Relu().kernel_fn.spec) is None


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        spec.Dense(4, 1.0, None, "ntk").out_dim = 5
