"""schema.py against real cog predictors, checked against what Replicate publishes.

The expected `Input` below is stability-ai/sdxl's published `openapi_schema` (version 39ed52f2…,
as recorded in replicate-python's tests/cassettes/models-get.yaml), written out field by field.
"""
from __future__ import annotations

import functools
import importlib
import json
import subprocess
import sys
from typing import AsyncIterator, Iterator, List, Optional

import cog
import pytest
from cog import BaseModel, BasePredictor, BaseRunner, ConcatenateIterator, File, Input, Path, Secret

S = importlib.import_module("replicate_jupyter.model.schema")

SCHEDULERS = {
    "DDIM": None,
    "DPMSolverMultistep": None,
    "HeunDiscrete": None,
    "KarrasDPM": None,
    "K_EULER_ANCESTRAL": None,
    "K_EULER": None,
    "PNDM": None,
}


def inference_mode(fn):  # stands in for @torch.inference_mode(): a wrapping decorator
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


class SDXL(BasePredictor):
    """The signature of replicate/cog-sdxl's predict.py (stability-ai/sdxl)."""

    @inference_mode
    def predict(
        self,
        prompt: str = Input(description="Input prompt", default="An astronaut riding a rainbow unicorn"),
        negative_prompt: str = Input(description="Input Negative Prompt", default=""),
        image: Path = Input(description="Input image for img2img or inpaint mode", default=None),
        mask: Path = Input(
            description="Input mask for inpaint mode. Black areas will be preserved, white areas will be inpainted.",
            default=None,
        ),
        width: int = Input(description="Width of output image", default=1024),
        height: int = Input(description="Height of output image", default=1024),
        num_outputs: int = Input(description="Number of images to output.", ge=1, le=4, default=1),
        scheduler: str = Input(description="scheduler", choices=SCHEDULERS.keys(), default="K_EULER"),
        num_inference_steps: int = Input(description="Number of denoising steps", ge=1, le=500, default=50),
        guidance_scale: float = Input(description="Scale for classifier-free guidance", ge=1, le=50, default=7.5),
        prompt_strength: float = Input(
            description="Prompt strength when using img2img / inpaint. 1.0 corresponds to full destruction of information in image",
            ge=0.0,
            le=1.0,
            default=0.8,
        ),
        seed: int = Input(description="Random seed. Leave blank to randomize the seed", default=None),
        refine: str = Input(
            description="Which refine style to use",
            choices=["no_refiner", "expert_ensemble_refiner", "base_image_refiner"],
            default="no_refiner",
        ),
        high_noise_frac: float = Input(
            description="For expert_ensemble_refiner, the fraction of noise to use", default=0.8, le=1.0, ge=0.0
        ),
        refine_steps: int = Input(
            description="For base_image_refiner, the number of steps to refine, defaults to num_inference_steps",
            default=None,
        ),
        apply_watermark: bool = Input(
            description="Applies a watermark to enable determining if an image is generated in downstream applications. If you have other provisions for generating or deploying images safely, you can use this to disable watermarking.",
            default=True,
        ),
        lora_scale: float = Input(
            description="LoRA additive scale. Only applicable on trained models.", ge=0.0, le=1.0, default=0.6
        ),
        replicate_weights: str = Input(
            description="Replicate LoRA weights to use. Leave blank to use the default weights.", default=None
        ),
        disable_safety_checker: bool = Input(
            description="Disable safety checker for generated images. This feature is only available through the API. See https://replicate.com/docs/how-does-replicate-work#safety",
            default=False,
        ),
    ) -> List[Path]:
        return []


PUBLISHED_SDXL_INPUT = {
    "type": "object",
    "title": "Input",
    "properties": {
        "mask": {"type": "string", "title": "Mask", "format": "uri", "x-order": 3,
                 "description": "Input mask for inpaint mode. Black areas will be preserved, white areas will be inpainted."},
        "seed": {"type": "integer", "title": "Seed", "x-order": 11,
                 "description": "Random seed. Leave blank to randomize the seed"},
        "image": {"type": "string", "title": "Image", "format": "uri", "x-order": 2,
                  "description": "Input image for img2img or inpaint mode"},
        "width": {"type": "integer", "title": "Width", "default": 1024, "x-order": 4,
                  "description": "Width of output image"},
        "height": {"type": "integer", "title": "Height", "default": 1024, "x-order": 5,
                   "description": "Height of output image"},
        "prompt": {"type": "string", "title": "Prompt", "default": "An astronaut riding a rainbow unicorn",
                   "x-order": 0, "description": "Input prompt"},
        "refine": {"allOf": [{"$ref": "#/components/schemas/refine"}], "default": "no_refiner", "x-order": 12,
                   "description": "Which refine style to use"},
        "scheduler": {"allOf": [{"$ref": "#/components/schemas/scheduler"}], "default": "K_EULER", "x-order": 7,
                      "description": "scheduler"},
        "lora_scale": {"type": "number", "title": "Lora Scale", "default": 0.6, "maximum": 1, "minimum": 0,
                       "x-order": 16, "description": "LoRA additive scale. Only applicable on trained models."},
        "num_outputs": {"type": "integer", "title": "Num Outputs", "default": 1, "maximum": 4, "minimum": 1,
                        "x-order": 6, "description": "Number of images to output."},
        "refine_steps": {"type": "integer", "title": "Refine Steps", "x-order": 14,
                         "description": "For base_image_refiner, the number of steps to refine, defaults to num_inference_steps"},
        "guidance_scale": {"type": "number", "title": "Guidance Scale", "default": 7.5, "maximum": 50, "minimum": 1,
                           "x-order": 9, "description": "Scale for classifier-free guidance"},
        "apply_watermark": {"type": "boolean", "title": "Apply Watermark", "default": True, "x-order": 15,
                            "description": "Applies a watermark to enable determining if an image is generated in downstream applications. If you have other provisions for generating or deploying images safely, you can use this to disable watermarking."},
        "high_noise_frac": {"type": "number", "title": "High Noise Frac", "default": 0.8, "maximum": 1, "minimum": 0,
                            "x-order": 13, "description": "For expert_ensemble_refiner, the fraction of noise to use"},
        "negative_prompt": {"type": "string", "title": "Negative Prompt", "default": "", "x-order": 1,
                            "description": "Input Negative Prompt"},
        "prompt_strength": {"type": "number", "title": "Prompt Strength", "default": 0.8, "maximum": 1, "minimum": 0,
                            "x-order": 10,
                            "description": "Prompt strength when using img2img / inpaint. 1.0 corresponds to full destruction of information in image"},
        "replicate_weights": {"type": "string", "title": "Replicate Weights", "x-order": 17,
                              "description": "Replicate LoRA weights to use. Leave blank to use the default weights."},
        "num_inference_steps": {"type": "integer", "title": "Num Inference Steps", "default": 50, "maximum": 500,
                                "minimum": 1, "x-order": 8, "description": "Number of denoising steps"},
        "disable_safety_checker": {"type": "boolean", "title": "Disable Safety Checker", "default": False, "x-order": 18,
                                   "description": "Disable safety checker for generated images. This feature is only available through the API. See https://replicate.com/docs/how-does-replicate-work#safety"},
    },
}
PUBLISHED_SDXL_ENUMS = {
    "refine": {"enum": ["no_refiner", "expert_ensemble_refiner", "base_image_refiner"], "type": "string",
               "title": "refine", "description": "An enumeration."},
    "scheduler": {"enum": ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL", "K_EULER",
                           "PNDM"], "type": "string", "title": "scheduler", "description": "An enumeration."},
}
PUBLISHED_SDXL_OUTPUT = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}
PUBLISHED_STATUS = {"enum": ["starting", "processing", "succeeded", "canceled", "failed"], "type": "string",
                    "title": "Status", "description": "An enumeration."}


# ---------------------------------------------------------------------------------- sdxl


def test_sdxl_input_matches_published_field_by_field():
    doc = S.build_schema(SDXL, name="stability-ai/sdxl")
    got = doc["components"]["schemas"]["Input"]
    want = PUBLISHED_SDXL_INPUT
    assert set(got["properties"]) == set(want["properties"])
    for field, expected in want["properties"].items():
        assert got["properties"][field] == expected, field
    assert "required" not in got  # every sdxl input has a default or may be left blank
    assert got == want
    # same numbers also once serialised (1.0 vs 1 compare equal in Python; JSON keeps values)
    assert json.loads(json.dumps(got)) == want


def test_sdxl_enum_components_output_and_status():
    comps = S.build_schema(SDXL)["components"]["schemas"]
    for name, expected in PUBLISHED_SDXL_ENUMS.items():
        assert comps[name] == expected
    assert comps["Output"] == PUBLISHED_SDXL_OUTPUT
    assert comps["Status"] == PUBLISHED_STATUS


def test_document_shape_and_paths():
    doc = S.build_schema(SDXL, name="stability-ai/sdxl")
    assert doc["openapi"] == "3.0.2"
    assert doc["info"] == {"title": "Cog", "version": "0.1.0", "x-replicate-model": "stability-ai/sdxl"}
    post = doc["paths"]["/predictions"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictionRequest"}
    assert post["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictionResponse"}
    assert "x-cog-streaming" not in post  # a list output is not a stream
    comps = doc["components"]["schemas"]
    assert comps["PredictionRequest"]["properties"]["input"] == {"$ref": "#/components/schemas/Input"}
    assert comps["PredictionResponse"]["properties"]["output"] == {"$ref": "#/components/schemas/Output"}
    assert {"Input", "Output", "PredictionRequest", "PredictionResponse", "Status"} <= set(comps)
    json.dumps(doc)  # JSON all the way down
    assert "x-replicate-model" not in S.build_schema(SDXL)["info"]


def test_sdxl_readers():
    doc = S.build_schema(SDXL)
    props = S.input_properties(doc)
    assert [n for n, _ in props][:4] == ["prompt", "negative_prompt", "image", "mask"]
    assert [p["x-order"] for _, p in props] == list(range(19))
    sched = dict(props)["scheduler"]
    assert sched["enum"] == PUBLISHED_SDXL_ENUMS["scheduler"]["enum"]
    assert sched["type"] == "string" and sched["default"] == "K_EULER"
    assert "allOf" not in sched
    # input_properties hands out copies: the document itself is untouched
    assert "enum" not in doc["components"]["schemas"]["Input"]["properties"]["scheduler"]
    assert S.first_string_input(doc) == "prompt"
    assert S.file_fields(doc) == {"image", "mask"}
    assert not S.is_iterator(doc) and not S.is_concatenate(doc)
    # the Input component alone works too
    assert [n for n, _ in S.input_properties(doc["components"]["schemas"]["Input"])][0] == "prompt"


def test_published_document_reads_the_same():
    """The readers work on a schema fetched from Replicate (a document we did not build)."""
    published = {"components": {"schemas": {"Input": PUBLISHED_SDXL_INPUT, **PUBLISHED_SDXL_ENUMS,
                                            "Output": PUBLISHED_SDXL_OUTPUT}}}
    ours = S.build_schema(SDXL)
    assert S.input_properties(published) == S.input_properties(ours)
    assert S.file_fields(published) == {"image", "mask"}


def test_cached_per_class():
    a = S.build_schema(SDXL)
    assert S.build_schema(SDXL) is a
    assert S.build_schema(SDXL()) is a  # an instance maps to its class
    assert S.build_schema(SDXL, name="x/y") is not a


# ---------------------------------------------------------------------------------- outputs


class OutStr(BasePredictor):
    def predict(self, prompt: str) -> str:
        return prompt


class OutPath(BasePredictor):
    def predict(self, prompt: str) -> Path:
        return Path("x")


class OutListPath(BasePredictor):
    def predict(self, prompt: str) -> list[Path]:
        return []


class OutIter(BasePredictor):
    def predict(self, prompt: str) -> Iterator[str]:
        yield prompt


class OutIterPath(BasePredictor):
    def predict(self, prompt: str) -> Iterator[Path]:
        yield Path("x")


class OutConcat(BasePredictor):
    def predict(self, prompt: str) -> ConcatenateIterator[str]:
        yield prompt


class OutAsyncGen(BasePredictor):
    async def predict(self, prompt: str) -> AsyncIterator[str]:
        yield prompt


class OutAsyncConcat(BasePredictor):
    async def predict(self, prompt: str) -> cog.AsyncConcatenateIterator[str]:
        yield prompt


class Caption(BaseModel):
    text: str
    score: float
    mask: Optional[Path]


class OutObject(BasePredictor):
    def predict(self, prompt: str) -> Caption:
        return Caption(text=prompt, score=1.0, mask=None)


class OutInt(BasePredictor):
    def predict(self, prompt: str) -> int:
        return 1


@pytest.mark.parametrize(
    "cls, expected, streaming",
    [
        (OutStr, {"type": "string", "title": "Output"}, False),
        (OutInt, {"type": "integer", "title": "Output"}, False),
        (OutPath, {"type": "string", "format": "uri", "title": "Output"}, False),
        (OutListPath, {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}, False),
        (OutIter, {"type": "array", "items": {"type": "string"}, "title": "Output", "x-cog-array-type": "iterator"}, True),
        (OutIterPath, {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output",
                       "x-cog-array-type": "iterator"}, True),
        (OutConcat, {"type": "array", "items": {"type": "string"}, "title": "Output", "x-cog-array-type": "iterator",
                     "x-cog-array-display": "concatenate"}, True),
        (OutAsyncGen, {"type": "array", "items": {"type": "string"}, "title": "Output", "x-cog-array-type": "iterator"}, True),
        (OutAsyncConcat, {"type": "array", "items": {"type": "string"}, "title": "Output",
                          "x-cog-array-type": "iterator", "x-cog-array-display": "concatenate"}, True),
        (OutObject, {"type": "object", "title": "Output", "required": ["text", "score"], "properties": {
            "text": {"type": "string", "title": "Text"},
            "score": {"type": "number", "title": "Score"},
            "mask": {"type": "string", "format": "uri", "nullable": True, "title": "Mask"}}}, False),
    ],
)
def test_output_shapes(cls, expected, streaming):
    doc = S.build_schema(cls)
    assert doc["components"]["schemas"]["Output"] == expected
    post = doc["paths"]["/predictions"]["post"]
    assert post.get("x-cog-streaming", False) is streaming
    assert S.is_iterator(doc) is streaming
    assert S.is_concatenate(doc) is (expected.get("x-cog-array-display") == "concatenate")


# ---------------------------------------------------------------------------------- inputs


class Files(BasePredictor):
    def predict(
        self,
        image: Path = Input(description="An image"),
        doc: File = Input(description="A file", default=None),
        images: list[Path] = Input(description="Several images", default=None),
        maybe: Optional[Path] = Input(description="Optional image", default=None),
    ) -> str:
        return ""


def test_file_inputs():
    doc = S.build_schema(Files)
    props = doc["components"]["schemas"]["Input"]["properties"]
    assert props["image"] == {"type": "string", "title": "Image", "format": "uri", "x-order": 0, "description": "An image"}
    assert props["doc"] == {"type": "string", "title": "Doc", "format": "uri", "x-order": 1, "description": "A file"}
    assert props["images"] == {"type": "array", "title": "Images", "items": {"type": "string", "format": "uri"},
                               "x-order": 2, "description": "Several images"}
    # Optional[...] = None: Cog writes the null default and nullable
    assert props["maybe"] == {"type": "string", "title": "Maybe", "format": "uri", "nullable": True, "default": None,
                              "x-order": 3, "description": "Optional image"}
    assert doc["components"]["schemas"]["Input"]["required"] == ["image"]
    assert S.file_fields(doc) == {"image", "doc", "images", "maybe"}
    assert S.first_string_input(doc) is None  # files are not prompts


class WithSecret(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="Prompt"),
        api_key: Secret = Input(description="API key", default=None),
    ) -> str:
        return ""


def test_secret_input():
    doc = S.build_schema(WithSecret)
    prop = doc["components"]["schemas"]["Input"]["properties"]["api_key"]
    # Cog's generator: a Secret with default=None is an optional credential (nullable, null default)
    assert prop == {"type": "string", "title": "Api Key", "format": "password", "writeOnly": True,
                    "x-cog-secret": True, "x-order": 1, "description": "API key", "default": None, "nullable": True}
    assert doc["components"]["schemas"]["Input"]["required"] == ["prompt"]


class Constraints(BasePredictor):
    def predict(
        self,
        text: str = Input(description="Text", min_length=2, max_length=10, regex="^[a-z]+$"),
        old: int = Input(description="Old knob", default=3, deprecated=True),
        size: int = Input(description="Size", choices=[256, 512, 768], default=512),
        plain: int = 7,
        bare: float = 0.5,
        needed: bool = Input(description="no default given"),
        nothing: str = Input(default=None),
        opt: Optional[str] = None,
        tags: list[str] = Input(description="Tags", default=["a", "b"]),
        ratio: float = Input(default=1, ge=0, le=2),
    ) -> str:
        return ""


def test_constraints_required_defaults_and_int_choices():
    doc = S.build_schema(Constraints)
    inp = doc["components"]["schemas"]["Input"]
    p = inp["properties"]
    assert p["text"] == {"type": "string", "title": "Text", "minLength": 2, "maxLength": 10, "pattern": "^[a-z]+$",
                         "x-order": 0, "description": "Text"}
    assert p["old"] == {"type": "integer", "title": "Old", "default": 3, "deprecated": True, "x-order": 1,
                        "description": "Old knob"}
    assert p["size"] == {"allOf": [{"$ref": "#/components/schemas/size"}], "default": 512, "x-order": 2,
                         "description": "Size"}
    assert doc["components"]["schemas"]["size"] == {"title": "size", "description": "An enumeration.",
                                                    "enum": [256, 512, 768], "type": "integer"}
    assert p["plain"] == {"type": "integer", "title": "Plain", "default": 7, "x-order": 3}
    assert p["bare"] == {"type": "number", "title": "Bare", "default": 0.5, "x-order": 4}
    assert p["nothing"] == {"type": "string", "title": "Nothing", "x-order": 6}
    assert p["opt"] == {"type": "string", "title": "Opt", "nullable": True, "default": None, "x-order": 7}
    assert p["tags"] == {"type": "array", "title": "Tags", "items": {"type": "string"}, "default": ["a", "b"],
                         "x-order": 8, "description": "Tags"}
    assert p["ratio"]["default"] == 1.0 and isinstance(p["ratio"]["default"], float)
    # Input(...) without a default is required; default=None means "may be left out"
    assert inp["required"] == ["text", "needed"]
    assert S.first_string_input(doc) == "text"


# ---------------------------------------------------------------------------------- predictor styles


class Runner(BaseRunner):
    def setup(self) -> None:
        pass

    def run(self, text: str = Input(description="Text to echo"), times: int = Input(default=2, ge=1)) -> str:
        return text * times


class Plain:
    """Not a cog class at all: just a class with predict()."""

    def predict(self, question: str, temperature: float = 0.7) -> Iterator[str]:
        yield question


class StringAnnotations(BasePredictor):
    def predict(self, n: "int" = Input(default=3, le=9), word: "str" = "hi") -> "list[str]":
        return [word] * n


def echo(prompt: str = Input(description="Prompt"), n: int = 1) -> str:
    return prompt * n


def test_base_runner_run():
    doc = S.build_schema(Runner)
    p = doc["components"]["schemas"]["Input"]["properties"]
    assert list(p) == ["text", "times"]
    assert p["times"] == {"type": "integer", "title": "Times", "default": 2, "minimum": 1, "x-order": 1}
    assert doc["components"]["schemas"]["Input"]["required"] == ["text"]
    assert doc["components"]["schemas"]["Output"] == {"type": "string", "title": "Output"}


def test_plain_class_and_instance():
    doc = S.build_schema(Plain())
    p = doc["components"]["schemas"]["Input"]["properties"]
    assert p == {
        "question": {"type": "string", "title": "Question", "x-order": 0},
        "temperature": {"type": "number", "title": "Temperature", "default": 0.7, "x-order": 1},
    }
    assert doc["components"]["schemas"]["Input"]["required"] == ["question"]
    assert doc["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    assert S.first_string_input(doc) == "question"


def test_string_annotations_and_functions():
    doc = S.build_schema(StringAnnotations)
    p = doc["components"]["schemas"]["Input"]["properties"]
    assert p["n"] == {"type": "integer", "title": "N", "default": 3, "maximum": 9, "x-order": 0}
    assert doc["components"]["schemas"]["Output"] == {"type": "array", "items": {"type": "string"}, "title": "Output"}
    fdoc = S.build_schema(echo)
    assert list(fdoc["components"]["schemas"]["Input"]["properties"]) == ["prompt", "n"]
    assert fdoc["components"]["schemas"]["Input"]["required"] == ["prompt"]


def test_no_predict_method_is_a_clear_error():
    class Nothing:
        pass

    with pytest.raises(TypeError, match="predict"):
        S.build_schema(Nothing)


def test_unsupported_type_names_the_field():
    class Bad(BasePredictor):
        def predict(self, thing: complex = Input(description="x")) -> str:
            return ""

    with pytest.raises(TypeError, match="thing"):
        S.build_schema(Bad)


def test_import_does_not_load_cog():
    code = "import sys, importlib; importlib.import_module('replicate_jupyter.model.schema'); print('cog' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_source_less_predictor_treats_blank_inputs_as_optional():
    """Without source text (exec'd code) `Input()` and `Input(default=None)` look the same;
    the schema then errs on the side of not requiring them."""
    namespace: dict = {}
    exec(
        "from cog import BasePredictor, Input\n"
        "class Hidden(BasePredictor):\n"
        "    def predict(self, prompt: str = Input(description='p'), n: int = 2, must: str = None) -> str:\n"
        "        return prompt\n",
        namespace,
    )
    doc = S.build_schema(namespace["Hidden"])
    inp = doc["components"]["schemas"]["Input"]
    assert "required" not in inp
    assert inp["properties"]["n"]["default"] == 2


# ---------------------------------------------------------------------------------- every Cog type, as Cog's generator writes it
# Expected JSON per cog 0.23's static generator (pkg/schema: openapi.go buildInputSchema,
# schema_type.go SchemaType.JSONSchema, types.go PrimitiveType.JSONType) and docs/python.md.

from typing import Annotated, TypedDict, Union  # noqa: E402

import pydantic  # noqa: E402
from typing_extensions import Required  # noqa: E402


class Result(TypedDict):
    text: str
    score: float
    mask: Optional[Path]


class Partial(TypedDict, total=False):
    a: int
    b: Required[str]


class Inner(BaseModel):
    x: int


class Rich(BaseModel):
    name: str
    tags: list[str]
    counts: dict[str, int]
    inner: Inner
    note: Optional[str] = None
    n: int = 3


class Pyd(pydantic.BaseModel):
    label: str
    prob: float = 0.5
    extra: Optional[list[int]] = None


def _output_of(ret):
    ns: dict = {}
    exec("def predict(self) -> R:\n    pass\n", {"R": ret}, ns)
    cls = type("P", (BasePredictor,), {"predict": ns["predict"]})
    return S.build_schema(cls)["components"]["schemas"]["Output"]


@pytest.mark.parametrize("ret, expected", [
    (Result, {"title": "Output", "type": "object", "required": ["text", "score", "mask"], "properties": {
        "text": {"type": "string", "title": "Text"}, "score": {"type": "number", "title": "Score"},
        "mask": {"type": "string", "format": "uri", "nullable": True, "title": "Mask"}}}),
    (Partial, {"title": "Output", "type": "object", "required": ["b"], "properties": {
        "a": {"type": "integer", "title": "A"}, "b": {"type": "string", "title": "B"}}}),
    (Rich, {"title": "Output", "type": "object", "required": ["name", "tags", "counts", "inner"], "properties": {
        "name": {"type": "string", "title": "Name"},
        "tags": {"type": "array", "items": {"type": "string"}, "title": "Tags"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}, "title": "Counts"},
        "inner": {"type": "object", "properties": {"x": {"type": "integer", "title": "X"}}, "required": ["x"], "title": "Inner"},
        "note": {"type": "string", "nullable": True, "title": "Note"},
        "n": {"type": "integer", "title": "N"}}}),
    (Pyd, {"title": "Output", "type": "object", "required": ["label"], "properties": {
        "label": {"type": "string", "title": "Label"}, "prob": {"type": "number", "title": "Prob"},
        "extra": {"type": "array", "items": {"type": "integer"}, "nullable": True, "title": "Extra"}}}),
    (dict[str, list[int]], {"title": "Output", "type": "object",
                            "additionalProperties": {"type": "array", "items": {"type": "integer"}}}),
    (dict, {"title": "Output", "type": "object"}),
    (list[dict[str, str]], {"title": "Output", "type": "array",
                            "items": {"type": "object", "additionalProperties": {"type": "string"}}}),
    (Annotated[Inner, cog.Opaque], {"title": "Output", "type": "object"}),
    (Annotated[list, cog.Opaque], {"title": "Output", "type": "array", "items": {"type": "object"}}),
    (Secret, {"title": "Output", "type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}),
    (Iterator[Caption], {"title": "Output", "type": "array", "x-cog-array-type": "iterator", "items": {
        "type": "object", "required": ["text", "score"], "properties": {
            "text": {"type": "string", "title": "Text"}, "score": {"type": "number", "title": "Score"},
            "mask": {"type": "string", "format": "uri", "nullable": True, "title": "Mask"}}}}),
])
def test_output_types_as_cog_writes_them(ret, expected):
    assert _output_of(ret) == expected


class AllInputs(BasePredictor):
    def predict(
        self,
        x: str | float,
        y: Union[int, list[int]] = 3,
        z: Optional[Union[int, str]] = None,
        cfg: Annotated[dict, cog.Opaque] = Input(description="Any JSON object"),
        items: Annotated[list, cog.Opaque] = Input(default=None),
        loose: Annotated[Optional[dict], cog.Opaque] = None,
        image: Path = Input(description="An image", accept="image/*"),
        weights: list[File] = Input(accept=".safetensors,.bin", default=None),
        maybe: File | None = None,
        key: Secret = Input(description="Key", default=None),
        token: Secret = Input(description="Token"),
        old: str = Input(default="x", deprecated=True),
        data: dict = Input(default=None),
        rows: list[dict] = Input(default=None),
    ) -> str:
        return ""


def test_input_types_as_cog_writes_them():
    inp = S.build_schema(AllInputs)["components"]["schemas"]["Input"]
    p = inp["properties"]
    assert p["x"] == {"title": "X", "anyOf": [{"type": "string"}, {"type": "number"}], "x-order": 0}
    assert p["y"] == {"title": "Y", "anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}],
                      "default": 3, "x-order": 1}
    assert p["z"] == {"title": "Z", "anyOf": [{"type": "integer"}, {"type": "string"}], "nullable": True,
                      "default": None, "x-order": 2}
    assert p["cfg"] == {"title": "Cfg", "type": "object", "x-order": 3, "description": "Any JSON object"}
    assert p["items"] == {"title": "Items", "type": "array", "items": {"type": "object"}, "x-order": 4}
    assert p["loose"] == {"title": "Loose", "type": "object", "nullable": True, "default": None, "x-order": 5}
    assert p["image"] == {"title": "Image", "type": "string", "format": "uri", "x-cog-accept": "image/*", "x-order": 6,
                          "description": "An image"}
    assert p["weights"] == {"title": "Weights", "type": "array", "items": {"type": "string", "format": "uri"},
                            "x-cog-accept": ".safetensors,.bin", "x-order": 7}
    assert p["maybe"] == {"title": "Maybe", "type": "string", "format": "uri", "nullable": True, "default": None, "x-order": 8}
    secret = {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
    assert p["key"] == {"title": "Key", **secret, "nullable": True, "default": None, "x-order": 9, "description": "Key"}
    assert p["token"] == {"title": "Token", **secret, "x-order": 10, "description": "Token"}  # no default: required
    assert p["old"] == {"title": "Old", "type": "string", "default": "x", "deprecated": True, "x-order": 11}
    assert p["data"] == {"title": "Data", "type": "object", "x-order": 12}
    assert p["rows"] == {"title": "Rows", "type": "array", "items": {"type": "object"}, "x-order": 13}
    assert inp["required"] == ["x", "cfg", "image", "token"]


def _predictor_source(signature: str, ret: str = "str", body: str = "return ''") -> str:
    return ("from typing import Optional, Iterator, Union\nfrom cog import BasePredictor, BaseRunner, Input, Path, "
            "ConcatenateIterator\n\nclass Predictor(BasePredictor):\n"
            f"    def predict(self, {signature}) -> {ret}:\n        {body}\n")


REFUSED = [  # (signature, return type, the reason we give (Cog's), cog SDK's wording at setup or None)
    ("x: int = Input(default=1, ge=2)", "str", "invalid default for x: int: must be at minimum 2", "same"),
    ("x: float = Input(default=3.5, le=2)", "str", "invalid default for x: float: must be at maximum 2", "same"),
    ("name: str = Input(accept='text/plain')", "str", "accept is only valid on Path or File inputs (parameter 'name')",
     None),  # checked by cog build (Go) only
    ("c: str = Input(choices=['a'])", "str", "choices=['a'] must have >= 2 elements: c: str", "same"),
    ("c: int = Input(choices=[1, 2], ge=0)", "str", "choices and ge/le are mutually exclusive: c: int", "same"),
    ("c: float = Input(choices=[0.5, 1.5])", "str", "incompatible input type for choices: c: float", "same"),
    ("n: int = Input(min_length=2)", "str", "incompatible input type for min_length/max_length: n: int", "same"),
    ("s: str = Input(default='ABC', regex='^[a-z]+$')", "str", "default not a regex match for input: s: str", "same"),
    ("s: str = Input(default='a', min_length=2)", "str", "default conflicts with min_length=2 for input: s: str", "same"),
    ("p: Union[Path, str]", "str", "unsupported union member Path in union", "same"),
    ("xs: list[list[int]]", "str", "List cannot have nested type list", "same"),
    ("x: str", "Optional[str]", "unsupported output type: Optional is not allowed as a return type",
     "output must not be Optional"),
    ("x: str", "Union[str, int]", "union types are not supported as output", None),  # Go refuses; the SDK lets it by
    ("x: str", "ConcatenateIterator[int]", "ConcatenateIterator element type must be str, got int",
     "ConcatenateIterator must have str element"),
    ("x: str", "Iterator[list[str]]", "iterator element type must not be Optional or List", "same"),
]


@pytest.mark.parametrize("signature, ret, reason, sdk", REFUSED)
def test_refuses_what_cog_refuses(tmp_path, signature, ret, reason, sdk):
    from replicate_jupyter.model import predictors as P

    (tmp_path / "predict.py").write_text(_predictor_source(signature, ret))
    with pytest.raises(S.SchemaError) as info:
        _ = P.load(str(tmp_path / "predict.py")).schema
    assert reason in str(info.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("signature, ret, reason, sdk", [r for r in REFUSED if r[3] is not None])
def test_cog_sdk_refuses_them_too(tmp_path, monkeypatch, signature, ret, reason, sdk):
    """The same definitions through cog's own inspector (what coglet runs at setup): refused, for
    the reason we give."""
    from cog import _inspector

    name = f"cogref_{abs(hash(signature + ret))}"
    (tmp_path / f"{name}.py").write_text(_predictor_source(signature, ret))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError) as info:
        _inspector.create_predictor(name, "Predictor")
    assert (reason if sdk == "same" else sdk) in str(info.value)


def test_run_and_predict_both_refused():
    class Both(BaseRunner):
        def run(self, x: str) -> str:
            return x

        def predict(self, x: str) -> str:
            return x

    with pytest.raises(S.SchemaError, match=r"must define either run\(\) or predict\(\), not both"):
        S.build_schema(Both)
