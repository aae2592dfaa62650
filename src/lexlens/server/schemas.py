"""Request and response models of the HTTP API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_K",
    "MAX_ID",
    "MAX_TEXT",
    "MAX_DIM",
    "QueryMode",
    "ErrorResponse",
    "SearchRequest",
    "WordMatch",
    "HitModel",
    "SearchResponse",
    "IndexSummary",
    "AddItem",
    "AddRequest",
    "AddResponse",
    "RemoveRequest",
    "RemoveResponse",
    "Health",
    "KnnRequest",
    "KnnResult",
]

#: the largest ``k`` (results per query) a request may ask for
MAX_K = 1000
#: item ids are int64
MAX_ID = 2**63 - 1
#: the longest query text / filter accepted, in characters
MAX_TEXT = 2000
#: the longest raw embedding accepted
MAX_DIM = 8192

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

#: how a lexical index encodes a query text (:data:`lexlens.models.base.QUERY_MODES`)
QueryMode = Literal["encoder", "inference-free"]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: one clear line (``detail``: field errors of a 422)."""

    error: str
    detail: list[dict[str, Any]] | None = None


class SearchRequest(BaseModel):
    """A query: ``text`` and/or ``image`` (base64), or ``item``, or ``embedding``."""

    model_config = _STRICT

    index: str | None = Field(None, max_length=100, description="index name (default: the first)")
    text: str | None = Field(None, max_length=MAX_TEXT, description="query text")
    image: str | None = Field(
        None, description="query image, base64 (or a data: URL); with text: image + text"
    )
    weight: float = Field(0.5, ge=0.0, le=1.0, description="share of the text in image + text")
    item: int | None = Field(None, ge=0, le=MAX_ID, description="more like this stored item")
    embedding: list[float] | None = Field(
        None, min_length=1, max_length=MAX_DIM, description="a raw query embedding [d]"
    )
    k: int = Field(10, ge=1, le=MAX_K, description="results wanted")
    min_score: float | None = Field(None, description="drop results scoring below this")
    where: str | None = Field(
        None, max_length=MAX_TEXT, description='metadata filter, e.g. "color=red AND n>2"'
    )
    explain: bool = Field(True, description="matched words of lexical results")
    query_mode: QueryMode = Field(
        "encoder",
        description="lexical indexes: encode the query text with the full text encoder, or "
        "inference-free (tokenise + learned per-token weights, no network)",
    )

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        kinds = [
            self.text is not None or self.image is not None,
            self.item is not None,
            self.embedding is not None,
        ]
        if sum(kinds) == 0:
            raise ValueError("empty query: give text, image, image + text, item or embedding")
        if sum(kinds) > 1:
            raise ValueError("give text and/or image, or item, or embedding (one kind of query)")
        if self.text is not None and not self.text.strip():
            raise ValueError("empty query text")
        return self


class WordMatch(BaseModel):
    """How much one query word adds to a lexical score, and through which word pieces."""

    query_word: str
    contribution: float
    pieces: list[str]


class HitModel(BaseModel):
    """One result."""

    rank: int
    id: int
    score: float
    path: str | None = None
    text: str | None = None
    captions: list[str] = []
    fields: dict[str, Any] = {}
    explain: Any = None
    explain_words: list[WordMatch] | None = Field(
        None,
        description="lexical results of a text query, when the model can tell: the score "
        "split by the query word that produced each matched word piece",
    )
    thumbnail: str | None = Field(None, description="URL of the item's thumbnail")


class SearchResponse(BaseModel):
    """Results of one query and the milliseconds spent per stage."""

    index: str
    query: str
    k: int
    hits: list[HitModel]
    timings_ms: dict[str, float]


class IndexSummary(BaseModel):
    """A served index."""

    name: str
    path: str
    model: str
    spec: str
    items: str
    count: int
    dim: int
    generation: int


class AddItem(BaseModel):
    """One file to add (a path on the server) with optional captions and fields."""

    model_config = _STRICT

    path: str = Field(..., min_length=1, max_length=4096)
    captions: list[str] = Field(default_factory=list, max_length=100)
    fields: dict[str, Any] = Field(default_factory=dict)


class AddRequest(BaseModel):
    """Add new or changed items: a dataset folder / file on the server, or a list of files."""

    model_config = _STRICT

    index: str | None = Field(None, max_length=100)
    source: str | None = Field(
        None, min_length=1, max_length=4096, description="dataset folder or file on the server"
    )
    items: list[AddItem] | None = Field(None, min_length=1, max_length=10000)

    @model_validator(mode="after")
    def _one_source(self) -> AddRequest:
        if (self.source is None) == (self.items is None):
            raise ValueError("give exactly one of source or items")
        return self


class AddResponse(BaseModel):
    """The add report (``lexlens index add --json``)."""

    index: str
    report: dict[str, Any]


class RemoveRequest(BaseModel):
    """Remove items by id, by path, or those whose file is gone (``missing``)."""

    model_config = _STRICT

    index: str | None = Field(None, max_length=100)
    ids: list[int] = Field(default_factory=list, max_length=100000)
    paths: list[str] = Field(default_factory=list, max_length=100000)
    missing: bool = False

    @model_validator(mode="after")
    def _something(self) -> RemoveRequest:
        if not self.ids and not self.paths and not self.missing:
            raise ValueError("nothing to remove: give ids, paths or missing=true")
        if any(not 0 <= i <= MAX_ID for i in self.ids):
            raise ValueError(f"ids are between 0 and {MAX_ID}")
        return self


class RemoveResponse(BaseModel):
    """How many items were removed and how many remain."""

    index: str
    removed: int
    count: int


class Health(BaseModel):
    """Liveness and the served indexes."""

    status: Literal["ok"]
    indexes: list[str]


class KnnRequest(BaseModel):
    """clip-retrieval's ``/knn-service`` request (``ClipClient`` sends every field)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    text: str | None = Field(None, max_length=MAX_TEXT)
    image: str | None = Field(None, description="base64 image")
    image_url: str | None = Field(None, description="refused: lexlens fetches nothing")
    embedding_input: list[float] | None = Field(None, min_length=1, max_length=MAX_DIM)
    modality: Literal["image", "text"] = "image"
    num_images: int = Field(40, ge=1, le=10 * MAX_K)
    num_result_ids: int | None = Field(None, ge=1, le=10 * MAX_K)
    indice_name: str | None = Field(None, max_length=100)
    use_mclip: bool = False
    deduplicate: bool = False
    use_safety_model: bool = False
    use_violence_detector: bool = False
    aesthetic_score: int | float | str | None = None
    aesthetic_weight: float | str | None = None


class KnnResult(BaseModel):
    """One clip-retrieval result (user fields of the item are added as extra keys)."""

    model_config = ConfigDict(extra="allow")

    id: int
    similarity: float
    url: str | None = None
    caption: str | None = None
    image_path: str | None = None
