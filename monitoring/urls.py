from django.urls import path

from monitoring import views

urlpatterns = [
    path("live", views.live, name="live"),
    path("health", views.health, name="health"),
    path("metrics", views.metrics, name="metrics"),
]
