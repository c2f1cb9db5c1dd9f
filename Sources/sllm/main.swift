print("sllm")
