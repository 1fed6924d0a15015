"""What people and machine clients get when a request fails outside the API's exception handler, never a stack
page or Django's technical pages:

- storage or job-queue failures: the pages answer a message (a 503 page, or a fragment for htmx), the admin shows
  it on the page the action came from, and the signed storage endpoints answer the API's JSON;
- not found: the app's own 404 page (templates/404.html) with DEBUG on too, where Django would list every URL
  pattern; the API and the storage endpoints answer the API's JSON 404."""

import logging
from collections.abc import Callable

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.utils.html import format_html
from django.views.defaults import page_not_found

from lorasite.errors import NotFound, error_body, unavailable_service

logger = logging.getLogger(__name__)

# Machine clients: the REST API (its own views are answered by lorasite.errors.api_exception_handler
# before this runs) and the signed storage URLs that stand in for S3's.
JSON_PATH_PREFIXES = ("/api/", "/storage/")


class ServiceFailureMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        unavailable = unavailable_service(exception)
        if unavailable is None:
            return None
        logger.warning("%s unavailable at %s: %r", unavailable.extra["service"], request.path, exception)
        if request.path.startswith(JSON_PATH_PREFIXES):
            return JsonResponse(error_body(unavailable), status=unavailable.status_code)
        match = request.resolver_match
        if match is not None and match.app_name == "admin" and request.method == "POST":
            # What ModelAdmin.message_user shows, on the page the action was sent from.
            messages.error(request, unavailable.message)
            return HttpResponseRedirect(request.get_full_path())
        if getattr(request, "htmx", False):
            # The message goes on top of the page's main area, whatever the request's own target was, and
            # the content already there stays (base.html's htmx-config swaps a 503).
            fragment = format_html('<p class="message error" role="alert">{}</p>', unavailable.message)
            response = HttpResponse(fragment, status=unavailable.status_code)
            response["HX-Retarget"] = "#main"
            response["HX-Reswap"] = "afterbegin"
            return response
        context = {"message": unavailable.message, "service": unavailable.extra["service"]}
        return render(request, "503.html", context, status=unavailable.status_code)


class NotFoundMiddleware:
    """The same 404 in every mode. Without it DEBUG (`make run`) answers Django's technical 404, which lists every
    URL pattern, for a missing or another workspace's object; production renders templates/404.html already."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 404 and request.resolver_match is None:
            # No URL pattern matched, so no view ran and the 404 is Django's own.
            return self.not_found(request, Http404())
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # The API's own views answer their 404s in lorasite.errors.api_exception_handler; this sees the rest.
        return self.not_found(request, exception) if isinstance(exception, Http404) else None

    @staticmethod
    def not_found(request: HttpRequest, exception: Http404) -> HttpResponse:
        if request.path.startswith(JSON_PATH_PREFIXES):
            error = exception if isinstance(exception, NotFound) else NotFound()
            return JsonResponse(error_body(error), status=error.status_code)
        return page_not_found(request, exception)
