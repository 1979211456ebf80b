"""editbench measuring itself: throughput and memory (bench), cost estimates against measured
peaks, bf16 precision, vLLM parity, and the shipped offline world (verify, rebuild)."""
