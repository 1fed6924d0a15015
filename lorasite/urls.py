from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from lorasite import object_store_views
from lorasite.health import healthz
from lorasite.metrics import metrics_view
from workspaces.apis import TokenObtainAPI

api_v1 = [
    path("auth/token/", TokenObtainAPI.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("", include("workspaces.urls")),
    path("", include("loras.urls")),
    path("", include("generation.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("storage/parts/<str:token>", object_store_views.upload_part, name="object-upload-part"),
    path("storage/files/<str:token>", object_store_views.download, name="object-download"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include(api_v1)),
    path("", include("workspaces.page_urls")),
    path("", include("loras.page_urls")),
    path("", include("generation.page_urls")),
]
