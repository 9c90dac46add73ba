{
  "targets": [
    {
      "target_name": "pagehash",
      "sources": ["pagehash.c"],
      "cflags": ["-O3", "-std=gnu11", "-pthread"],
      "ldflags": ["-pthread"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
