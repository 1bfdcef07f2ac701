from django.urls import path

from accounts.views import RegisterView

urlpatterns = [path("auth/register", RegisterView.as_view(), name="register")]
