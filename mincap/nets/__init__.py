"""The networks: architecture specs and presets (`models`), and quantization (`quant`): the
fake quantizers QAT trains with and the integer codes a file stores."""
