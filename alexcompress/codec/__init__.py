"""The file format: Huffman and rANS coding, the sparse index, the encodings and the `.dcz` container. numpy and bitarray only, never torch."""
