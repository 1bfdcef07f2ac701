from django.urls import path

from exchange.api import views
from exchange.api.dispatch import by_method

urlpatterns = [
    path("auth/register", views.RegisterView.as_view(), name="register"),
    path("", views.HealthView.as_view(), name="health"),
    path("orders", by_method(views.OrdersView), name="orders"),
    path("orders/<str:order_id>", by_method(views.OrderDetailView), name="order-detail"),
    path("positions", views.PositionsView.as_view(), name="positions"),
    path("positions/<str:team_id>", views.PositionsView.as_view(), name="team-positions"),
    path("fills", views.FillsView.as_view(), name="fills"),
    path("instruments", views.InstrumentsView.as_view(), name="instruments"),
    path("account", views.AccountView.as_view(), name="account"),
    path("orderbook/<str:instrument_id>", views.OrderBookView.as_view(), name="orderbook"),
    path("game", views.GameView.as_view(), name="game"),
]
