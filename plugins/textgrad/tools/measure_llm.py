"""Measure SmolLM2 load (first, cached), generation tokens/s, forward+backward time.

Usage: OMP_NUM_THREADS=1 .venv/bin/python plugins/textgrad/tools/measure_llm.py [CACHE_DIR]  (fresh temp dir by default)
"""
import os, time, tempfile, sys
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
torch.set_num_threads(1)
from gradkit_support.llm import load_smollm2
root = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
t = time.perf_counter(); c = time.process_time()
m, tok, info = load_smollm2(root=root)
print(f"load1 cached={info['cached']} wall={time.perf_counter()-t:.1f}s cpu={time.process_time()-c:.1f}s", flush=True)
t = time.perf_counter(); c = time.process_time()
m, tok, info = load_smollm2(root=root)
print(f"load2 cached={info['cached']} wall={time.perf_counter()-t:.1f}s cpu={time.process_time()-c:.1f}s", flush=True)
print("params", sum(p.numel() for p in m.parameters()))
msgs = [{"role": "user", "content": "What is the capital of France?"}]
ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
t = time.perf_counter(); c = time.process_time()
with torch.no_grad():
    out = m.generate(**ids, max_new_tokens=32, do_sample=False)
n = out.shape[1] - ids["input_ids"].shape[1]
print(f"generate {n} tokens wall={time.perf_counter()-t:.2f}s cpu={time.process_time()-c:.2f}s tok/s(wall)={n/(time.perf_counter()-t):.1f}")
print("answer:", tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
x = torch.randint(0, 1000, (1, 128))
m.train()
for i in range(2):
    t = time.perf_counter(); c = time.process_time()
    loss = m(input_ids=x, labels=x).loss
    loss.backward()
    print(f"fwd+bwd seq128 wall={time.perf_counter()-t:.2f}s cpu={time.process_time()-c:.2f}s")
    m.zero_grad()
