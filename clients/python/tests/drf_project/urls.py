from django.urls import path

from . import views

urlpatterns = [
    path("droplets", views.DropletList.as_view()),
    path("storage", views.Storage.as_view()),
]
