"""Recipes: what to do to which module, resolved against a model before anything runs.

    inventory   the model's weight-bearing modules and their roles, from its structure (meta device OK)
    patterns    compressed-tensors' matching rules; regexes that match exactly a set of modules
    schemes     quantization schemes as plain data
    presets     the named recipes as rules (role -> scheme, and what each is), and the llm-compressor recipe for them
    presets_doc docs/presets.md's table of the presets, rendered from the rules (`make docs`)
    awq         AWQ smoothing mappings derived from the layers that exist
    custom      spec.recipe.custom: parsed by llm-compressor's own classes, checked against the model
    resolved    ResolvedRecipe: the groups, role table, calibration passes and records of one resolution
    resolve     resolve(recipe_spec, model) -> ResolvedRecipe, shared by the planner and the worker

`import kompress_job.recipe` imports neither torch, llm-compressor nor compressed-tensors; resolving a
preset needs only torch (for the model). Custom recipes import llm-compressor to be parsed.
"""

from kompress_job.recipe.inventory import ModuleInventory, Role, WeightModule, build_inventory
from kompress_job.recipe.resolve import resolve
from kompress_job.recipe.resolved import ModuleGroup, ResolvedRecipe

__all__ = ["ModuleGroup", "ModuleInventory", "ResolvedRecipe", "Role", "WeightModule", "build_inventory", "resolve"]
