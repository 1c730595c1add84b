# Reference vectors for the BERT embedder tests (crates/tenantry-search/src/bert.rs):
#   python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy tokenizers safetensors
#   /tmp/v/bin/python minilm_reference.py MODEL_DIR "How do I get my money back?"
# Independent numpy re-implementation of sentence-transformers' all-MiniLM-L6-v2 pipeline
# (BertModel, mean pooling over the attention mask, L2 normalisation), float64.
import json, sys, math
import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer
d = sys.argv[1]
cfg = json.load(open(f"{d}/config.json"))
W = {k: v.astype(np.float64) for k, v in load_file(f"{d}/model.safetensors").items()}
p = "" if "embeddings.word_embeddings.weight" in W else "bert."
tok = Tokenizer.from_file(f"{d}/tokenizer.json")
tok.enable_truncation(256); tok.no_padding()
def ln(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b
erf = np.vectorize(math.erf)
def gelu(x): return 0.5 * x * (1 + erf(x / math.sqrt(2)))
def lin(x, n): return x @ W[n + ".weight"].T + W[n + ".bias"]
def embed(text):
    e = tok.encode(text); ids = np.array(e.ids); n = len(ids)
    x = W[p+"embeddings.word_embeddings.weight"][ids] + W[p+"embeddings.position_embeddings.weight"][:n] + W[p+"embeddings.token_type_embeddings.weight"][np.array(e.type_ids)]
    x = ln(x, W[p+"embeddings.LayerNorm.weight"], W[p+"embeddings.LayerNorm.bias"])
    H = cfg["num_attention_heads"]; dh = cfg["hidden_size"] // H
    for l in range(cfg["num_hidden_layers"]):
        b = f"{p}encoder.layer.{l}."
        q = lin(x, b+"attention.self.query").reshape(n, H, dh).transpose(1, 0, 2)
        k = lin(x, b+"attention.self.key").reshape(n, H, dh).transpose(1, 0, 2)
        v = lin(x, b+"attention.self.value").reshape(n, H, dh).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(dh); s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, -1)
        x = ln(lin(a, b+"attention.output.dense") + x, W[b+"attention.output.LayerNorm.weight"], W[b+"attention.output.LayerNorm.bias"])
        h = gelu(lin(x, b+"intermediate.dense"))
        x = ln(lin(h, b+"output.dense") + x, W[b+"output.LayerNorm.weight"], W[b+"output.LayerNorm.bias"])
    m = x.mean(0); return m / np.linalg.norm(m), e.tokens
for t in sys.argv[2:]:
    v, toks = embed(t)
    print(t, toks); print("[" + ", ".join(f"{x:.6f}" for x in v[:8]) + "]")
a, _ = embed("How do I get my money back?"); b, _ = embed("Refund policy: we return payments within 14 days"); c, _ = embed("The cat sat on the mat")
print("related", a @ b, "unrelated", a @ c)
