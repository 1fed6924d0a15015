from rest_framework import pagination


class PageNumberPagination(pagination.PageNumberPagination):
    """The page object every list endpoint answers: {count, next, previous, results}. A list API view sets
    `pagination_class = PageNumberPagination` so that drf-spectacular documents that object, not a bare array."""

    page_size_query_param = "page_size"
    max_page_size = 100
