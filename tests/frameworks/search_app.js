// The same search backend as search_app.py, as an Express app whose answers
// the `compression` middleware compresses with its shipped settings (gzip,
// deflate and, since 1.8, br, by the client's Accept-Encoding).
// Usage: node search_app.js PORT
const express = require("express");
const compression = require("compression");

const app = express();
app.use(compression());
app.use(express.json());

const calls = {};
const CART_WORDS = new Set(["buy", "purchase"]);

function answer(query) {
  const q = String(query).toLowerCase().split(/\s+/).filter(Boolean).join(" ");
  calls[q] = (calls[q] || 0) + 1;
  const words = q.split(" ");
  if (words.some((w) => CART_WORDS.has(w))) {
    const item = words[words.length - 1];
    return {
      intent: "add_to_order",
      confidence: 0.97,
      query,
      message: `Added ${item} to your order. `.repeat(40),
      products: [{ product_id: `${item}-cart`, supplier: "cart-co", quantity: 1 }],
    };
  }
  const products = [];
  for (let i = 1; i <= 10; i++) {
    products.push({
      product_id: `${q.replace(/ /g, "-")}-${i}`,
      supplier: `supplier-${i % 3}`,
      name: `${q} number ${i}, organic and locally sourced`,
      price: 1.5 + i,
    });
  }
  return { intent: "product_search", confidence: 0.88, query, products };
}

app.get("/api/v1/search", (req, res) => res.json(answer(req.query.q || "")));
app.post("/api/v1/search", (req, res) => res.json(answer((req.body || {}).query || "")));
app.get("/calls", (req, res) => res.json(calls));

const server = app.listen(Number(process.argv[2]), "127.0.0.1");
process.on("SIGTERM", () => server.close(() => process.exit(0)));
