"""Latent banks (s3jax.quant.banks): many layers' latents in one flat array per field, and back."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import s3jax
from s3jax.config import base_config, latent_banking
from s3jax.quant import Banked, Scaled, bank_tree, materialize_tree, project_tree, unbank_tree
from s3jax.quant.interface import is_latent
from s3jax.quant.tree import gradient_proxies, proxy_pullback, role_tree

PARAMS = {"a": {"kernel": jnp.ones((3, 3, 4, 8))}, "b": {"kernel": jnp.ones((3, 3, 8, 8)), "bias": jnp.zeros(8)},
          "c": {"kernel": jnp.ones((8, 5))}}


def latents(method, scale="none", rules=(r".*kernel",)):
  q = s3jax.quant.quantizer(method, 3, scale=scale)
  return s3jax.quant.to_latents(PARAMS, s3jax.quant.rules_for(rules, q), jax.random.key(0))


@pytest.mark.parametrize("method", s3jax.quant.method_names())
def test_banks_hold_every_layer_and_the_per_layer_functions_agree(method):
  tree = latents(method)
  banked = bank_tree(tree)
  (bank,) = banked.banks  # one method, one dtype: one bank
  assert all(leaf.shape == (288 + 576 + 40,) for leaf in jax.tree.leaves(bank))  # the three kernels
  chex.assert_trees_all_equal(unbank_tree(banked), tree)
  chex.assert_trees_all_equal(materialize_tree(banked), materialize_tree(tree))
  chex.assert_trees_all_equal(unbank_tree(project_tree(banked)), project_tree(tree))
  assert role_tree(banked).banks == (s3jax.quant.quantizer_of(bank).roles(bank),)
  # The pull-back through the banks is the per-layer one, bank by bank.
  weight_grads = jax.tree.map(lambda w: jnp.linspace(-1, 1, w.size).reshape(w.shape), materialize_tree(tree))
  expected = jax.vjp(materialize_tree, tree)[1](weight_grads)[0]
  got = proxy_pullback(gradient_proxies(banked), banked, weight_grads)
  assert isinstance(got, Banked)
  chex.assert_trees_all_equal(unbank_tree(got), expected)


def test_methods_and_bit_widths_get_their_own_banks_and_scaled_latents_stay_per_layer():
  q = s3jax.quant
  tree = q.to_latents(PARAMS, (q.Rule(r"a/kernel", q.quantizer("s3", 3)), q.Rule(r"b/kernel", q.quantizer("deepshift_ps", 3)),
                               q.Rule(r"c/kernel", q.FULL_PRECISION)), jax.random.key(0))
  tree["d"] = s3jax.quant.quantizer("s3", 2).init(jax.random.key(1), (3, 3, 2, 2))
  tree["e"] = s3jax.quant.quantizer("s3", 3, scale="learned").init(jax.random.key(2), (3, 3, 2, 2))
  banked = bank_tree(tree)
  assert len(banked.banks) == 3  # s3 3-bit, deepshift_ps, s3 2-bit (another structure)
  assert isinstance(banked.rest["e"], Scaled)  # with its scale, in the rest
  chex.assert_trees_all_equal(unbank_tree(banked), tree)
  chex.assert_trees_all_equal(materialize_tree(banked), materialize_tree(tree))
  # Abstract shapes bank the same way (the trainer builds its optimizer from them).
  shapes = jax.eval_shape(bank_tree, tree)
  assert jax.tree.structure(shapes) == jax.tree.structure(banked)


def test_a_tree_without_latents_is_unchanged_by_banking():
  banked = bank_tree(PARAMS)
  assert banked.banks == ()
  chex.assert_trees_all_equal(unbank_tree(banked), PARAMS)
  assert unbank_tree(PARAMS) is PARAMS
  np.testing.assert_array_equal(materialize_tree(banked)["c"]["kernel"], PARAMS["c"]["kernel"])


def test_the_train_step_materializes_per_layer_weights_from_banks_of_any_tree():
  from s3jax.training.steps import materialized_once
  tree = latents("s3")
  banked = bank_tree(tree)
  chex.assert_trees_all_equal(materialized_once(gradient_proxies(banked), banked, jnp.int32(0)),
                              materialize_tree(tree))
  # A float model banked (bank_latents on, small or auto): no banks, the same plain tree.
  banked = bank_tree(PARAMS)
  chex.assert_trees_all_equal(materialized_once(gradient_proxies(banked), banked, jnp.int32(0)), PARAMS)


def test_a_size_limit_banks_the_small_layers_and_keeps_the_large_ones_per_layer():
  tree = latents("s3")  # a: 288 weights, b: 576, c: 40
  banked = bank_tree(tree, max_size=288)
  (bank,) = banked.banks
  assert all(leaf.shape == (288 + 40,) for leaf in jax.tree.leaves(bank))
  assert is_latent(banked.rest["b"]["kernel"])  # 576 weights: its own latent, in the rest
  chex.assert_trees_all_equal(unbank_tree(banked), tree)
  chex.assert_trees_all_equal(materialize_tree(banked), materialize_tree(tree))
  weight_grads = jax.tree.map(lambda w: jnp.linspace(-1, 1, w.size).reshape(w.shape), materialize_tree(tree))
  expected = jax.vjp(materialize_tree, tree)[1](weight_grads)[0]
  chex.assert_trees_all_equal(unbank_tree(proxy_pullback(gradient_proxies(banked), banked, weight_grads)),
                              expected)


@pytest.mark.parametrize("choice,backend,expected", [
    ("auto", "cpu", (True, 2**20)), ("auto", "gpu", (True, None)), ("auto", "tpu", (True, None)),
    ("on", "cpu", (True, None)), ("small", "gpu", (True, 2**20)), ("off", "gpu", (False, None))])
def test_the_trainer_banks_small_layers_on_cpu_and_every_layer_on_accelerators(choice, backend, expected):
  config = base_config()
  config.bank_latents = choice
  assert latent_banking(config, backend) == expected
