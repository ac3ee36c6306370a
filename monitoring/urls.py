from django.urls import path

from monitoring import views

urlpatterns = [
    path("live", views.live, name="live"),
]
