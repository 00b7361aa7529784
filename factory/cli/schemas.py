"""JSON Schemas `factory schema` prints: the matrix manifest's (editor completion)
and each store document's."""

from __future__ import annotations

import json

from pydantic import BaseModel

from factory.manifest.model import Manifest
from factory.store.documents import STORE_DOCUMENTS

DOCUMENTS: dict[str, type[BaseModel]] = {"manifest": Manifest, **STORE_DOCUMENTS}


def json_schema(document: str) -> str:
    return json.dumps(DOCUMENTS[document].model_json_schema(by_alias=True), indent=2)
