"""The local backend's stand-ins for S3 presigned URLs: signed, expiring endpoints for uploading a
multipart part and downloading an object. The signature is the authorisation, as with S3."""

import hashlib
import mimetypes

from django.core import signing
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from lorasite.object_store import COPY_CHUNK, LocalObjectStore, get_object_store, unsign_token


def _local_store() -> LocalObjectStore | None:
    store = get_object_store()
    return store if isinstance(store, LocalObjectStore) else None


def _forbidden(message: str) -> JsonResponse:
    return JsonResponse({"message": message, "errors": {}}, status=403)


@csrf_exempt
@require_http_methods(["PUT"])
def upload_part(request: HttpRequest, token: str) -> HttpResponse:
    store = _local_store()
    try:
        payload = unsign_token(token)
    except signing.BadSignature:
        return _forbidden("This upload URL is invalid or has expired; request new part URLs.")
    if store is None:
        return _forbidden("Local uploads are disabled: storage is S3.")
    try:
        path = store.part_path(payload["upload_id"], payload["part"])
    except FileNotFoundError:
        return JsonResponse({"message": "This upload was completed or aborted.", "errors": {}}, status=404)
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
    try:
        payload = unsign_token(token)
    except signing.BadSignature:
        return _forbidden("This download URL is invalid or has expired.")
    if store is None or not store.exists(payload["key"]):
        return JsonResponse({"message": "Not found.", "errors": {}}, status=404)
    content_type = mimetypes.guess_type(payload["filename"])[0] or "application/octet-stream"
    return FileResponse(
        store.open_stream(payload["key"]), as_attachment=not payload.get("inline"), filename=payload["filename"],
        content_type=content_type,
    )
