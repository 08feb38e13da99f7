"""A search backend as teams write them: FastAPI under uvicorn, answers
compressed by FastAPI's own GZipMiddleware with its shipped settings.

The answers follow the shipped proxy.toml's pointers (/intent, /confidence,
/products, /product_id, /supplier). `GET /calls` tells the test how often
each normalized query reached the backend. With GZIP=0 the app answers
plain (nginx compresses in front of it)."""
import os
import threading

from fastapi import FastAPI, Request
from fastapi.middleware.gzip import GZipMiddleware

app = FastAPI()
if os.environ.get("GZIP", "1") == "1":
    app.add_middleware(GZipMiddleware)

_calls = {}
_lock = threading.Lock()

CART_WORDS = {"buy", "purchase"}


def answer(query: str) -> dict:
    q = " ".join(query.lower().split())
    with _lock:
        _calls[q] = _calls.get(q, 0) + 1
    words = q.split()
    if CART_WORDS & set(words):
        item = words[-1]
        return {
            "intent": "add_to_order",
            "confidence": 0.97,
            "query": query,
            "message": f"Added {item} to your order. " * 20,
            "products": [{"product_id": f"{item}-cart", "supplier": "cart-co", "quantity": 1}],
        }
    return {
        "intent": "product_search",
        "confidence": 0.88,
        "query": query,
        "products": [
            {
                "product_id": f"{q.replace(' ', '-')}-{i}",
                "supplier": f"supplier-{i % 3}",
                "name": f"{q.title()} number {i}, organic and locally sourced",
                "price": 1.5 + i,
            }
            for i in range(1, 11)
        ],
    }


@app.get("/api/v1/search")
def search_get(q: str = ""):
    return answer(q)


@app.post("/api/v1/search")
async def search_post(request: Request):
    body = await request.json()
    return answer(str(body.get("query", "")))


@app.get("/calls")
def calls():
    with _lock:
        return dict(_calls)
