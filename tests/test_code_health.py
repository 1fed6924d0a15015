"""Code health: one truth per fact and no dead names in the production modules."""

from pathlib import Path

import pytest
import yaml

from loras import lora_inspect, models
from loras.lora_inspect import family_label

ROOT = Path(__file__).resolve().parent.parent
APPS = ("loras", "generation", "lorasite", "workspaces")


def production_sources() -> dict[Path, str]:
    return {
        path: path.read_text() for app in APPS for path in (ROOT / app).rglob("*.py") if "migrations" not in path.parts
    }


def test_family_label_is_the_one_lookup_of_family_names():
    assert family_label("wan-14b") == "Wan 2.1/2.2 14B (A14B)"
    assert family_label("not-a-family") == "not-a-family"
    copies = [
        str(path.relative_to(ROOT))
        for path, source in production_sources().items()
        if "FAMILIES.get(" in source and path != Path(lora_inspect.__file__)
    ]
    assert copies == [], f"use loras.lora_inspect.family_label instead of FAMILIES.get in {copies}"


def test_dead_names_are_gone():
    assert not hasattr(models, "UploadStatus")
    assert "pending" not in models.Status.values
    assert models.LoRA._meta.get_field("status").default == models.Status.PROCESSING
    for unused in ("KEY_FORMATS", "EXPERTS"):
        assert not hasattr(lora_inspect, unused), unused


@pytest.mark.django_db
def test_one_filter_declaration_serves_the_api_and_the_page(client, owner, workspace):
    from loras import apis, forms, selectors
    from loras.filters import ORDERINGS, LoRAFilterSet

    for copy in (
        hasattr(selectors, "LoRAFilters"),
        hasattr(selectors, "ORDERINGS"),
        hasattr(forms, "SORT_CHOICES"),
        hasattr(forms, "LibraryFilterForm"),
        hasattr(apis.LoRAListCreateAPI, "FilterInput"),
    ):
        assert not copy
    filters = set(LoRAFilterSet.base_filters)
    schema = yaml.safe_load(client.get("/api/v1/schema/").content)
    documented = {p["name"]: p for p in schema["paths"]["/api/v1/workspaces/{slug}/loras/"]["get"]["parameters"]}
    assert filters <= set(documented)
    assert sorted(documented["ordering"]["schema"]["enum"]) == sorted(ORDERINGS)
    client.force_login(owner)
    page = client.get(f"/w/{workspace.slug}/loras/").content.decode()
    assert all(f'name="{name}"' in page for name in filters)


def test_the_lora_cache_has_no_hash_on_hit_option():
    """The reader of a cached file checks its hash (bit rot) and invalidates the entry; a second, opt-in check on
    every hit was never turned on."""
    import inspect

    from generation.runtime.lora_cache import LoRACache

    assert "verify_hash_on_hit" not in inspect.signature(LoRACache).parameters
