"""validation.py against schemas built from real cog predictors, with real files, PIL and numpy."""
from __future__ import annotations

import base64
import hashlib
import importlib
import io
from typing import Optional

import numpy as np
import pytest
from cog import BasePredictor, Input, Path, Secret
from PIL import Image

from replicate_jupyter.errors import InputError
from replicate_jupyter.prediction.files import FileOutput, InputFile

S = importlib.import_module("replicate_jupyter.model.schema")
V = importlib.import_module("replicate_jupyter.model.validation")


class Gen(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="What to draw"),
        steps: int = Input(description="Steps", default=20, ge=1, le=50),
        guidance: float = Input(description="Guidance", default=7.5, ge=1, le=50),
        fmt: str = Input(description="Format", default="png", choices=["png", "webp"]),
        tag: str = Input(description="Tag", default="abc", regex="^[a-z]+$", min_length=2, max_length=10),
        seed: int = Input(description="Seed, blank for random", default=None),
        hires: bool = Input(description="High resolution", default=False),
        image: Path = Input(description="Init image", default=None),
        images: list[Path] = Input(description="Reference images", default=None),
        api_key: Secret = Input(description="Key", default=None),
        note: Optional[str] = None,
        sizes: list[int] = Input(description="Sizes", default=[64]),
    ) -> str:
        return prompt


@pytest.fixture(scope="module")
def schema():
    return S.build_schema(Gen, name="me/gen")


def problems(schema, given):
    with pytest.raises(InputError) as info:
        V.validate(schema, given, model="me/gen")
    return info.value


def png_bytes(color=(255, 0, 0), size=(4, 3)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------- defaults & coercion


def test_defaults_filled_and_blank_fields_left_out(schema):
    out = V.validate(schema, {"prompt": "a cat"})
    assert out == {"prompt": "a cat", "steps": 20, "guidance": 7.5, "fmt": "png", "tag": "abc", "hires": False, "sizes": [64]}
    assert "seed" not in out and "image" not in out and "api_key" not in out and "note" not in out
    assert list(out) == ["prompt", "steps", "guidance", "fmt", "tag", "hires", "sizes"]  # x-order
    # a default list is a fresh copy each time
    out["sizes"].append(1)
    assert V.validate(schema, {"prompt": "a"})["sizes"] == [64]


def test_null_only_where_nullable(schema):
    """Cog's server refuses an explicit null unless the schema says `nullable` (issue 17)."""
    out = V.validate(schema, {"prompt": "a", "note": None, "api_key": None})
    assert out["note"] is None and out["api_key"] is None  # Optional[str] = None, Secret = Input(default=None)
    err = problems(schema, {"prompt": "a", "seed": None, "steps": None})
    assert [(p.field, p.rule, p.value, p.allowed) for p in err.problems] == [
        ("steps", "type", None, "an integer"), ("seed", "type", None, "an integer")]
    assert "null is not allowed" in str(err) and "leave it out" in str(err)
    assert V.validate(schema, {"prompt": "a"})["steps"] == 20  # left out: the default


@pytest.mark.parametrize(
    "field, given, expected",
    [
        ("steps", 4.0, 4),
        ("steps", "4", 4),
        ("steps", " 12 ", 12),
        ("steps", "5.0", 5),
        ("steps", np.int64(7), 7),
        ("guidance", 3, 3.0),
        ("guidance", "2.5", 2.5),
        ("hires", "true", True),
        ("hires", "yes", True),
        ("hires", "No", False),
        ("hires", "0", False),
        ("hires", "1", True),
        ("hires", 1, True),
        ("prompt", 42, "42"),
        ("prompt", 1.5, "1.5"),
        ("sizes", [1, 2, 3.0], [1, 2, 3]),
        ("sizes", 8, [8]),
    ],
)
def test_coercions(schema, field, given, expected):
    inp = {"prompt": "x", field: given}
    out = V.validate(schema, inp)
    assert out[field] == expected
    assert type(out[field]) is type(expected)


def test_bool_is_not_an_integer_and_other_type_errors(schema):
    err = problems(schema, {"prompt": True, "steps": True, "guidance": False, "hires": "maybe", "sizes": [1, "x"]})
    by = {(p.field, p.rule): p for p in err.problems}
    assert set(by) == {("prompt", "type"), ("steps", "type"), ("guidance", "type"), ("hires", "type"), ("sizes[1]", "type")}
    assert by[("steps", "type")].allowed == "an integer"
    assert by[("steps", "type")].value is True
    assert by[("guidance", "type")].allowed == "a number"
    assert by[("prompt", "type")].allowed == "a string"
    assert by[("sizes[1]", "type")].value == "x"
    assert problems(schema, {"prompt": "x", "steps": 4.5}).problems[0].allowed == "an integer"


# ---------------------------------------------------------------------------------- each rule and its message


@pytest.mark.parametrize(
    "given, field, rule, value, allowed",
    [
        ({"steps": 0}, "steps", "minimum", 0, ">= 1"),
        ({"steps": 51}, "steps", "maximum", 51, "<= 50"),
        ({"guidance": 50.5}, "guidance", "maximum", 50.5, "<= 50"),
        ({"guidance": 0.5}, "guidance", "minimum", 0.5, ">= 1"),
        ({"fmt": "gif"}, "fmt", "choices", "gif", "one of: png, webp"),
        ({"tag": "ABC"}, "tag", "pattern", "ABC", "matching ^[a-z]+$"),
        ({"tag": "a"}, "tag", "minLength", "a", "at least 2 characters"),
        ({"tag": "abcdefghijk"}, "tag", "maxLength", "abcdefghijk", "at most 10 characters"),
        ({"steps": "many"}, "steps", "type", "many", "an integer"),
    ],
)
def test_each_rule_names_field_rule_value_allowed(schema, given, field, rule, value, allowed):
    err = problems(schema, {"prompt": "p", **given})
    assert len(err.problems) == 1
    p = err.problems[0]
    assert (p.field, p.rule, p.value, p.allowed) == (field, rule, value, allowed)
    text = str(err)
    assert "me/gen" in text
    for part in (field, rule, repr(value), allowed):
        assert part in text, (part, text)


def test_required_missing(schema):
    err = problems(schema, {})
    (p,) = err.problems
    assert (p.field, p.rule) == ("prompt", "required")
    assert "prompt" in str(err) and "required" in str(err) and "a string" in str(err)
    # None for a required field is "missing" too
    assert problems(schema, {"prompt": None}).problems[0].rule == "required"


def test_choices_hint_for_near_miss(schema):
    err = problems(schema, {"prompt": "p", "fmt": "PNG"})
    text = str(err)
    assert "did you mean 'png'" in text and "one of: png, webp" in text and "'PNG'" in text and "choices" in text


def test_several_problems_in_one_error(schema):
    err = problems(schema, {"promt": "a cat", "steps": 500, "fmt": "gif", "hires": "perhaps"})
    assert [(p.field, p.rule) for p in err.problems] == [
        ("promt", "unknown"),
        ("prompt", "required"),
        ("steps", "maximum"),
        ("fmt", "choices"),
        ("hires", "type"),
    ]
    assert err.fields == ["promt", "prompt", "steps", "fmt", "hires"]
    assert "5 problems" in str(err)


def test_unknown_field_suggests_closest_and_lists_known(schema):
    err = problems(schema, {"prompt": "x", "promt": "a cat", "zzz": 1})
    unknown = {p.field: p for p in err.problems}
    assert unknown["promt"].rule == "unknown"
    text = str(err)
    assert "unknown input 'promt' — did you mean 'prompt'?" in text
    assert "prompt, steps, guidance, fmt, tag, seed" in text  # the known inputs, in order
    assert "did you mean" not in str(unknown["zzz"])
    assert "'a cat'" in str(unknown["promt"])


def test_input_must_be_a_dict(schema):
    with pytest.raises(InputError):
        V.validate(schema, ["prompt"])  # type: ignore[arg-type]


def test_none_input_means_empty(schema):
    err = problems(schema, None)
    assert err.fields == ["prompt"]


# ---------------------------------------------------------------------------------- secrets


def test_secret_kept_but_never_echoed(schema):
    out = V.validate(schema, {"prompt": "x", "api_key": "r8_supersecret"})
    assert out["api_key"] == "r8_supersecret"
    secret = Secret(secret_value="r8_other")
    assert V.validate(schema, {"prompt": "x", "api_key": secret})["api_key"] is secret
    err = problems(schema, {"prompt": "x", "api_key": ["r8_leaky"]})
    (p,) = err.problems
    assert p.field == "api_key" and p.value == "***"
    assert "r8_leaky" not in str(err) and "***" in str(err)


# ---------------------------------------------------------------------------------- files


def test_file_from_str_path_and_pathlib(schema, tmp_path):
    data = png_bytes()
    f = tmp_path / "cat.png"
    f.write_bytes(data)
    for given in (str(f), f, Path(str(f))):  # str, pathlib.Path, cog.Path
        out = V.validate(schema, {"prompt": "x", "image": given})["image"]
        assert isinstance(out, InputFile)
        assert out.name == "cat.png" and out.read() == data and out.sha256 == sha(data)
        assert out.content_type == "image/png"


def test_file_from_os_pathlike(schema, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello")

    class Where:
        def __fspath__(self):
            return str(f)

    out = V.validate(schema, {"prompt": "x", "image": Where()})["image"]
    assert out.name == "notes.txt" and out.read() == b"hello"


def test_missing_path_is_a_file_problem(schema, tmp_path):
    missing = tmp_path / "nope.png"
    err = problems(schema, {"prompt": "x", "image": str(missing)})
    (p,) = err.problems
    assert (p.field, p.rule) == ("image", "file")
    assert str(missing) in str(err) and "does not exist" in str(err)
    err = problems(schema, {"prompt": "x", "image": tmp_path})
    assert err.problems[0].rule == "file" and "directory" in str(err)


def test_file_from_pil_image(schema):
    img = Image.new("RGB", (5, 4), (0, 128, 255))
    out = V.validate(schema, {"prompt": "x", "image": img})["image"]
    assert out.name == "image.png" and out.content_type == "image/png"
    back = Image.open(io.BytesIO(out.read()))
    assert back.size == (5, 4) and back.getpixel((0, 0)) == (0, 128, 255)
    assert out.sha256 == sha(out.read())


@pytest.mark.parametrize(
    "array, pixel",
    [
        (np.full((3, 4, 3), [10, 20, 30], dtype=np.uint8), (10, 20, 30)),
        (np.full((3, 4, 4), [10, 20, 30, 255], dtype=np.uint8), (10, 20, 30, 255)),
        (np.full((3, 4), 200, dtype=np.uint8), 200),
        (np.full((3, 4, 3), 1.0, dtype=np.float32), (255, 255, 255)),
        (np.zeros((3, 4), dtype=np.float64), 0),
    ],
)
def test_file_from_numpy(schema, array, pixel):
    out = V.validate(schema, {"prompt": "x", "image": array})["image"]
    assert out.name == "image.png" and out.content_type == "image/png"
    back = Image.open(io.BytesIO(out.read()))
    assert back.size == (4, 3) and back.getpixel((1, 1)) == pixel


def test_bad_numpy_arrays(schema):
    err = problems(schema, {"prompt": "x", "image": np.full((3, 4), 2.0)})
    assert err.problems[0].rule == "type" and "0..1" in str(err)
    err = problems(schema, {"prompt": "x", "image": np.zeros((2, 3, 4, 5), dtype=np.uint8)})
    assert "shape" in str(err)


def test_file_from_bytes_and_bytearray(schema):
    data = png_bytes()
    for given in (data, bytearray(data)):
        out = V.validate(schema, {"prompt": "x", "image": given})["image"]
        assert out.read() == data and out.sha256 == sha(data)
        assert out.name == "input.png" and out.content_type == "image/png"
    raw = V.validate(schema, {"prompt": "x", "image": b"\x00\x01"})["image"]
    assert raw.name == "input" and raw.read() == b"\x00\x01"


def test_file_from_open_file(schema, tmp_path):
    data = png_bytes((1, 2, 3))
    f = tmp_path / "dog.png"
    f.write_bytes(data)
    with open(f, "rb") as fh:
        out = V.validate(schema, {"prompt": "x", "image": fh})["image"]
    assert out.name == "dog.png" and out.read() == data and out.sha256 == sha(data)
    buf = io.BytesIO(data)  # a nameless stream
    out = V.validate(schema, {"prompt": "x", "image": buf})["image"]
    assert out.read() == data and out.name == "input.png"


def test_file_from_data_uri(schema):
    data = png_bytes()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    out = V.validate(schema, {"prompt": "x", "image": uri})["image"]
    assert out.read() == data and out.content_type == "image/png" and out.name == "input.png"
    assert out.sha256 == sha(data)


def test_file_from_url_is_kept_not_fetched(schema):
    url = "https://replicate.delivery/pbxt/abc/out-0.png"
    out = V.validate(schema, {"prompt": "x", "image": url})["image"]
    assert isinstance(out, InputFile)
    assert out.url == url and out.name == "out-0.png" and out.sha256 is None  # nothing downloaded
    assert out.as_data_uri() == url


def test_file_from_fileoutput_and_inputfile(schema):
    data = png_bytes((9, 9, 9))
    fo = FileOutput(data, name="out-0.png")
    out = V.validate(schema, {"prompt": "x", "image": fo})["image"]
    assert isinstance(out, InputFile)
    assert out.name == "out-0.png" and out.read() == data and out.sha256 == fo.sha256
    same = InputFile(data, name="given.png")
    assert V.validate(schema, {"prompt": "x", "image": same})["image"] is same


def test_list_of_files_each_item_checked(schema, tmp_path):
    f = tmp_path / "a.png"
    f.write_bytes(png_bytes())
    out = V.validate(schema, {"prompt": "x", "images": [str(f), png_bytes((0, 0, 0))]})["images"]
    assert [type(i) for i in out] == [InputFile, InputFile] and out[0].name == "a.png"
    err = problems(schema, {"prompt": "x", "images": [str(f), str(tmp_path / "gone.png"), 42]})
    assert [(p.field, p.rule) for p in err.problems] == [("images[1]", "file"), ("images[2]", "type")]


def test_not_a_file(schema):
    err = problems(schema, {"prompt": "x", "image": 3.5})
    (p,) = err.problems
    assert (p.field, p.rule) == ("image", "type") and "path" in p.allowed


# ---------------------------------------------------------------------------------- published schemas and caching


def test_validates_a_published_schema_with_enum_refs():
    published = {
        "components": {
            "schemas": {
                "Input": {
                    "type": "object",
                    "title": "Input",
                    "properties": {
                        "prompt": {"type": "string", "title": "Prompt", "default": "An astronaut", "x-order": 0},
                        "scheduler": {"allOf": [{"$ref": "#/components/schemas/scheduler"}], "default": "K_EULER", "x-order": 1},
                        "num_outputs": {"type": "integer", "default": 1, "minimum": 1, "maximum": 4, "x-order": 2},
                    },
                },
                "scheduler": {"enum": ["DDIM", "K_EULER"], "type": "string", "title": "scheduler", "description": "An enumeration."},
            }
        }
    }
    assert V.validate(published, {"num_outputs": "2"}) == {"prompt": "An astronaut", "scheduler": "K_EULER", "num_outputs": 2}
    err = problems(published, {"scheduler": "heun", "num_outputs": 5})
    assert [(p.field, p.rule, p.allowed) for p in err.problems] == [
        ("scheduler", "choices", "one of: DDIM, K_EULER"),
        ("num_outputs", "maximum", "<= 4"),
    ]


def test_compiled_validator_is_reused(schema):
    first = V.compile_schema(schema)
    assert V.compile_schema(schema) is first
    V.validate(schema, {"prompt": "x"})
    assert V.compile_schema(schema) is first
    # an equal but distinct schema object gets its own validator (no stale id() hits)
    import copy

    other = copy.deepcopy(schema)
    assert V.compile_schema(other) is not first
    assert V.validate(other, {"prompt": "y"})["prompt"] == "y"


def test_validate_does_not_mutate_input(schema):
    given = {"prompt": 5, "steps": "3"}
    V.validate(schema, given)
    assert given == {"prompt": 5, "steps": "3"}


def test_import_does_not_load_numpy_pil_or_cog():
    import subprocess
    import sys

    code = (
        "import sys, importlib; importlib.import_module('replicate_jupyter.model.validation');"
        "print(sorted(m for m in ('numpy', 'PIL', 'cog') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_value_breaking_several_rules_reports_each(schema):
    err = problems(schema, {"prompt": "x", "tag": "A"})
    assert [(p.field, p.rule) for p in err.problems] == [("tag", "minLength"), ("tag", "pattern")]


def test_big_values_are_described_not_dumped(schema):
    err = problems(schema, {"prompt": "x", "steps": np.zeros((64, 64, 3), dtype=np.uint8)})
    text = str(err)
    assert "shape=(64, 64, 3)" in text and "\n    " not in text


# ---------------------------------------------------------------------------------- Cog's server rules (issue 17, 18)

from typing import Union  # noqa: E402


class Typed(BasePredictor):
    def predict(
        self,
        u: str | float = Input(default="x"),
        ul: Union[int, list[int]] = Input(default=0),
        uo: Optional[Union[int, str]] = None,
        xs: list[int] = Input(default=[1]),
        fs: list[float] = Input(default=[0.5]),
        f: float = Input(default=1.0),
        g: float = Input(default=0.5, ge=0, le=1),
    ) -> str:
        return ""


@pytest.fixture(scope="module")
def typed():
    return S.build_schema(Typed)


@pytest.mark.parametrize("given, expected", [(1, 1.0), (2.5, 2.5), ("1", "1"), ("abc", "abc")])
def test_union_tried_in_cogs_order(typed, given, expected):
    """`str | float` given 1 is the number 1.0, as cog's own normaliser makes it."""
    from cog import _adt

    out = V.validate(typed, {"u": given})["u"]
    assert out == expected and type(out) is type(expected)
    cog_says = _adt.FieldType.from_type(Union[str, float]).normalize(given)
    assert cog_says == out and type(cog_says) is type(out)


def test_union_of_scalar_and_list(typed):
    assert V.validate(typed, {"ul": [1, 2]})["ul"] == [1, 2]
    assert V.validate(typed, {"ul": 3})["ul"] == 3
    err = problems(typed, {"ul": ["3"], "u": True})
    assert [(p.field, p.rule) for p in err.problems] == [("u", "type"), ("ul", "type")]
    assert err.problems[0].allowed == "a string or a number"
    assert V.validate(typed, {"uo": None})["uo"] is None  # a nullable union takes null


def test_list_items_are_typed(typed):
    err = problems(typed, {"xs": ["3", 4, True]})
    assert [(p.field, p.rule, p.value, p.allowed) for p in err.problems] == [
        ("xs[0]", "type", "3", "an integer"), ("xs[2]", "type", True, "an integer")]
    assert V.validate(typed, {"xs": [3, 4.0]})["xs"] == [3, 4]
    assert V.validate(typed, {"fs": [1, 2.5]})["fs"] == [1.0, 2.5]
    assert problems(typed, {"fs": ["1.5"]}).problems[0].field == "fs[0]"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), "nan", "inf", np.float64("nan")])
def test_nan_and_infinity_refused(typed, bad):
    for field in ("f", "g"):
        (p,) = problems(typed, {field: bad}).problems
        assert (p.field, p.rule, p.allowed) == (field, "type", "a finite number")
    (p,) = problems(typed, {"fs": [1.0, bad]}).problems
    assert p.field == "fs[1]" and p.rule == "type"
