"""The local backend's stand-ins for S3 presigned URLs: signed, expiring endpoints for uploading a
multipart part and downloading an object. The signature is the authorisation, as with S3."""

import hashlib
import mimetypes
import re
from collections.abc import Iterator

from django.core import signing
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from lorasite.object_store import COPY_CHUNK, LocalObjectStore, get_object_store, unsign_token


def _local_store() -> LocalObjectStore | None:
    store = get_object_store()
    return store if isinstance(store, LocalObjectStore) else None


def _forbidden(message: str) -> JsonResponse:
    return JsonResponse({"message": message, "code": "permission_denied", "errors": {}}, status=403)


def _payload(token: str, *, needs: set[str]) -> dict | None:
    """The token's payload when it is genuine, unexpired and of the kind this endpoint takes (a
    download token carries a key, a part token an upload id and part); None otherwise."""
    try:
        payload = unsign_token(token)
    except signing.BadSignature:
        return None
    return payload if needs <= payload.keys() else None


def _part_too_large(limit: int) -> JsonResponse:
    return JsonResponse(
        {
            "message": f"This part is over its {limit} bytes.",
            "code": "payload_too_large",
            "errors": {},
            "limit_bytes": limit,
        },
        status=413,
    )


@csrf_exempt
@require_http_methods(["PUT"])
def upload_part(request: HttpRequest, token: str) -> HttpResponse:
    store = _local_store()
    payload = _payload(token, needs={"upload_id", "part", "bytes"})
    if payload is None:
        return _forbidden("This upload URL is invalid or has expired; request new part URLs.")
    if store is None:
        return _forbidden("Local uploads are disabled: storage is S3.")
    try:
        path = store.part_path(payload["upload_id"], payload["part"])
    except FileNotFoundError:
        return JsonResponse(
            {"message": "This upload was completed or aborted.", "code": "not_found", "errors": {}}, status=404
        )
    # Django reads no more of a body than its Content-Length, so bounding the header bounds what is written.
    if int(request.META.get("CONTENT_LENGTH") or 0) > payload["bytes"]:
        return _part_too_large(payload["bytes"])
    digest = hashlib.md5(usedforsecurity=False)
    partial = path.with_suffix(".writing")
    # Stream the body to disk: the web process never holds a whole part in memory.
    with open(partial, "wb") as out:
        for chunk in iter(lambda: request.read(COPY_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    partial.replace(path)
    response = HttpResponse(status=200)
    response["ETag"] = f'"{digest.hexdigest()}"'
    response["Access-Control-Expose-Headers"] = "ETag"
    return response


@require_GET
def download(request: HttpRequest, token: str) -> HttpResponse:
    store = _local_store()
    payload = _payload(token, needs={"key", "filename"})
    if payload is None:
        return _forbidden("This download URL is invalid or has expired.")
    if store is None or not store.exists(payload["key"]):
        return JsonResponse({"message": "Not found.", "code": "not_found", "errors": {}}, status=404)
    content_type = mimetypes.guess_type(payload["filename"])[0] or "application/octet-stream"
    size = store.size(payload["key"])
    byte_range = _requested_range(request.headers.get("Range", ""), size)
    if byte_range is None:
        response = FileResponse(
            store.open_stream(payload["key"]),
            as_attachment=not payload.get("inline"),
            filename=payload["filename"],
            content_type=content_type,
        )
    else:
        # Browsers seek in a video with ranged requests, as they do against S3.
        start, end = byte_range
        response = StreamingHttpResponse(
            _read_slice(store, payload["key"], start, end), status=206, content_type=content_type
        )
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
        response["Content-Length"] = str(end - start + 1)
    response["Accept-Ranges"] = "bytes"
    return response


def _requested_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes=` range; None for no, several or unsatisfiable ranges,
    which are answered with the whole object (allowed by RFC 9110)."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", "") or size == 0:
        return None
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last) if last else size - 1, size - 1)
    return (start, end) if start <= end else None


def _read_slice(store: LocalObjectStore, key: str, start: int, end: int) -> Iterator[bytes]:
    with store.open_stream(key) as handle:
        handle.seek(start)
        remaining = end - start + 1
        while remaining > 0:
            chunk = handle.read(min(COPY_CHUNK, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk
