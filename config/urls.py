"""URL wiring: the admin and the v1 API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from catalog.apis import ProductBulkApi, ProductDetailApi, ProductListApi
from core.apis import HealthApi
from core.observability import metrics_view
from events.apis import EventIngestApi, UserAliasApi, UserApi, UserDataApi
from outcomes.apis import (
    AnalyticsApi,
    ExperimentDetailApi,
    ExperimentListApi,
    ExperimentPromoteApi,
    ExperimentStopApi,
)
from recommendations.apis import (
    BuyAgainApi,
    ComplementaryApi,
    CompleteTheLookApi,
    ModelActivateApi,
    ModelListApi,
    ModelReplayApi,
    RankApi,
    RecentlyViewedApi,
    RelatedApi,
    TrainingRunDetailApi,
    TrainingRunListApi,
    TrendingApi,
    UserRecommendationsApi,
)
from tenants.apis import ApiKeyDetailApi, ApiKeyListApi, ApiKeyRotateApi, StoreApi

api_v1 = [
    path("health", HealthApi.as_view(), name="health"),
    path("store", StoreApi.as_view(), name="store"),
    path("keys", ApiKeyListApi.as_view(), name="keys"),
    path("keys/<str:prefix>", ApiKeyDetailApi.as_view(), name="key"),
    path("keys/<str:prefix>/rotate", ApiKeyRotateApi.as_view(), name="key-rotate"),
    path("products", ProductListApi.as_view(), name="product-list"),
    path("products/bulk", ProductBulkApi.as_view(), name="product-bulk"),
    path("products/<str:product_id>", ProductDetailApi.as_view(), name="product-detail"),
    path("products/<str:product_id>/related", RelatedApi.as_view(), name="product-related"),
    path("products/<str:product_id>/complementary", ComplementaryApi.as_view(), name="product-complementary"),
    path(
        "products/<str:product_id>/complete-the-look",
        CompleteTheLookApi.as_view(),
        name="product-complete-the-look",
    ),
    path("events", EventIngestApi.as_view(), name="events"),
    path(
        "users/<str:user_id>/recommendations", UserRecommendationsApi.as_view(), name="user-recommendations"
    ),
    path("users/<str:user_id>/rank", RankApi.as_view(), name="user-rank"),
    path("users/<str:user_id>/recently-viewed", RecentlyViewedApi.as_view(), name="user-recently-viewed"),
    path("users/<str:user_id>/buy-again", BuyAgainApi.as_view(), name="user-buy-again"),
    path("users/<str:user_id>/aliases", UserAliasApi.as_view(), name="user-aliases"),
    path("users/<str:user_id>/data", UserDataApi.as_view(), name="user-data"),
    path("users/<str:user_id>", UserApi.as_view(), name="user"),
    path("trending", TrendingApi.as_view(), name="trending"),
    path("analytics", AnalyticsApi.as_view(), name="analytics"),
    path("experiments", ExperimentListApi.as_view(), name="experiments"),
    path("experiments/<int:experiment_id>", ExperimentDetailApi.as_view(), name="experiment"),
    path("experiments/<int:experiment_id>/stop", ExperimentStopApi.as_view(), name="experiment-stop"),
    path(
        "experiments/<int:experiment_id>/promote", ExperimentPromoteApi.as_view(), name="experiment-promote"
    ),
    path("training-runs", TrainingRunListApi.as_view(), name="training-runs"),
    path("training-runs/<int:run_id>", TrainingRunDetailApi.as_view(), name="training-run"),
    path("models", ModelListApi.as_view(), name="models"),
    path("models/<int:version>/activate", ModelActivateApi.as_view(), name="model-activate"),
    path("models/<int:version>/replay", ModelReplayApi.as_view(), name="model-replay"),
    path(
        "schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="docs",
    ),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/api/v1/docs/", permanent=False)),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
]

handler400 = "core.errors.bad_request_view"
handler403 = "core.errors.permission_denied_view"
handler404 = "core.errors.not_found_view"
handler500 = "core.errors.server_error_view"
