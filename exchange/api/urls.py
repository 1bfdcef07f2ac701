from django.urls import path

from exchange.api import views

urlpatterns = [
    path("", views.HealthView.as_view(), name="health"),
    path("orders", views.OrdersView.as_view(), name="orders"),
    path("orders/<str:order_id>", views.OrderDetailView.as_view(), name="order-detail"),
    path("positions", views.PositionsView.as_view(), name="positions"),
    path("positions/<str:team_id>", views.PositionsView.as_view(), name="team-positions"),
    path("fills", views.FillsView.as_view(), name="fills"),
    path("instruments", views.InstrumentsView.as_view(), name="instruments"),
    path("game", views.GameView.as_view(), name="game"),
]
