"""The JSON shapes of ``fervid serve``, as pydantic models, so /docs and /openapi.json show them.

The handlers build plain dicts (the models only describe them), so a schema here can never
turn a good answer into a 500; tests check that real answers validate against these.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_PROBS = {"angry": 0.02, "disgust": 0.0, "fear": 0.03, "happy": 0.89, "sad": 0.01, "surprise": 0.03,
          "neutral": 0.02}
_FACE = {"box": [212, 96, 148, 148], "score": 0.93,
         "landmarks": [[251.2, 150.3], [318.0, 149.1], [286.4, 185.7], [257.9, 213.0], [313.6, 212.2]],
         "emotion": "happy", "confidence": 0.89, "probabilities": _PROBS}
_TIMING = {"decode_ms": 3.1, "inference_ms": 11.8, "total_ms": 16.2}


class ErrorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"error": "image is larger than the 8 MB limit"}]})
    error: str = Field(description="what was wrong, in one line")


class FaceResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_FACE]})
    box: list[int] = Field(description="x, y, width, height in pixels of the uploaded image")
    score: float = Field(description="face detector confidence, 0..1")
    landmarks: list[list[float]] = Field(description="5 points (x, y): right eye, left eye, nose tip, "
                                                     "mouth corners")
    emotion: str = Field(description="most probable expression")
    confidence: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="probability of every class")


class Timing(BaseModel):
    decode_ms: float
    inference_ms: float = Field(description="face detection + expression classification")
    total_ms: float = Field(description="from the request's arrival to the answer")


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"width": 640, "height": 480, "faces": [_FACE], "timing": _TIMING}]})
    width: int
    height: int
    faces: list[FaceResult] = Field(description="every face found, largest first")
    timing: Timing


class BatchItem(BaseModel):
    filename: str
    status: int = Field(description="200, or the HTTP status this image alone would have got")
    width: int | None = None
    height: int | None = None
    faces: list[FaceResult] | None = None
    timing: Timing | None = None
    error: str | None = None


class BatchResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "count": 2, "failed": 1, "results": [
            {"filename": "a.jpg", "status": 200, "width": 640, "height": 480, "faces": [_FACE], "timing": _TIMING},
            {"filename": "notes.txt", "status": 422,
             "error": "not a valid image: the data is corrupt or not JPEG, PNG, WebP, BMP or TIFF"}]}]})
    count: int
    failed: int
    results: list[BatchItem]


class VideoResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "filename": "clip.mp4", "frames": 2, "analysed": 2, "fps": 25.0, "duration": 0.08, "width": 640,
        "height": 480, "classes": list(_PROBS), "timing": _TIMING,
        "results": [{"frame": 0, "time": 0.0, "analysed": True, "faces": [
            {"id": 1, **_FACE, "smoothed": {"emotion": "happy", "confidence": 0.89, "probabilities": _PROBS}}]}]}]})
    filename: str
    frames: int = Field(description="frames decoded")
    analysed: int = Field(description="frames analysed (every N-th with every=N); one entry each in results")
    fps: float
    duration: float | None
    width: int
    height: int
    classes: list[str]
    results: list[dict[str, Any]] = Field(description="per analysed frame: index, time (s), tracked faces "
                                                      "with their raw and smoothed expressions")
    timing: Timing


class ModelResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "arch": "vgg_m", "classes": list(_PROBS), "input_size": 48, "accuracy": 0.68,
        "metrics": {"val_acc": 0.68, "val_split": "PublicTest"}, "params": 2_400_000, "mflops": 120.5,
        "fervid_version": "0.1.0",
        "colors": {"happy": "#f0c800"}, "limits": {"max_upload_mb": 8.0, "max_pixels": 40_000_000}}]})
    arch: str | None
    classes: list[str]
    input_size: int | None
    accuracy: float | None = Field(description="validation accuracy of the model file being served (measured on "
                                               "the export itself, e.g. int8, when recorded; else the training run's)")
    prior: str = Field("fer2013", description="class prior of the probabilities: fer2013 (as trained), "
                                             "uniform, or the class->weight file the service was started with")
    metrics: dict[str, Any]
    params: int | None
    mflops: float | None
    fervid_version: str
    colors: dict[str, str] = Field(description="CSS colour of each class, as in annotated images")
    limits: dict[str, int | float]


def _binary(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


def image_body(field: str, many: bool = False) -> dict[str, Any]:
    """OpenAPI request body for handlers that read the upload themselves (size caps, no disk)."""
    part = _binary("JPEG, PNG, WebP, BMP or TIFF image")
    form = {"type": "object", "required": [field],
            "properties": {field: {"type": "array", "items": part} if many else part}}
    content: dict[str, Any] = {"multipart/form-data": {"schema": form}}
    if not many:
        for t in ("image/jpeg", "image/png", "image/webp"):
            content[t] = {"schema": _binary("the image itself as the request body")}
    return {"requestBody": {"required": True, "content": content}}


def video_body() -> dict[str, Any]:
    part = _binary("a short video (MP4, AVI, MOV, MKV, WebM: whatever OpenCV's FFmpeg reads)")
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {"file": part}}},
        "video/mp4": {"schema": _binary("the video itself as the request body")}}}}
