{
  "targets": [
    {
      "target_name": "pagehash",
      "sources": ["pagehash.c"],
      "cflags": ["-O3", "-std=c11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
