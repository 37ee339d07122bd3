"""Recipes shipped with sn_tf (sn_tf.configs) load by name, from any directory; the
repository's experiment recipes (models/*.py) are built on them."""

import pathlib
import subprocess
import sys

import pytest

from sn_tf.training.recipes import RecipeError, load_recipe, shipped_recipes

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_shipped_recipes_are_fcn_and_detectnet():
    assert shipped_recipes() == ["detectnet", "fcn"]


@pytest.mark.parametrize("name", ["fcn", "detectnet"])
@pytest.mark.parametrize("variant", ["", "demo", "smoke"])
def test_a_shipped_recipe_loads_by_name_as_the_repository_recipe(name, variant):
    by_name = load_recipe(f"{name}:{variant}" if variant else name)
    assert by_name["name"] == name and by_name["variant"] == variant
    assert by_name["model"]["kind"] == name
    # models/<name>.py builds on the shipped recipe and changes nothing (yet)
    assert load_recipe(f"{REPO / 'models' / name}.py:{variant}") == by_name


def test_an_unknown_name_lists_the_shipped_recipes():
    with pytest.raises(RecipeError, match="not found.*shipped: detectnet, fcn"):
        load_recipe("fnc:demo")
    with pytest.raises(RecipeError, match="unknown variant"):
        load_recipe("fcn:tiny")


def test_shipped_recipe_by_name_from_another_directory(tmp_path):
    code = ("from sn_tf.training.recipes import load_recipe\n"
            "print(load_recipe('detectnet:smoke')['model']['kind'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "detectnet"
