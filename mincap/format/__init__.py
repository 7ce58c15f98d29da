"""The `.mincap` file: a self-contained network whose length in bits is the network's size.

- `bits`: varints, a bounds-checked reader, LSB-first bit packing;
- `spec`: the binary architecture spec and the layer shapes it implies;
- `side`: a layer's side information (scales and biases) and its packed form;
- `codes`: what one layer stores (`LayerCodes`) and the four ways its symbols are coded;
- `container`: the file itself: header, layers, the shared ANS stream, CRC (`encode`, `decode`);
- `writer`: a trained (fake-quantized) network to file bytes (`export`, `reexport`).

The byte-level specification is `docs/format.md`; `reference/decode.py` decodes a file from it
with numpy alone.
"""
