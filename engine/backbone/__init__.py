"""The backbone stage (SPEC §1–3): kernel maps, sparse convolutions and the sparse U-Net runners."""
