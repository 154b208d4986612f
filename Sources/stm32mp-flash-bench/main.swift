// Replaced by the real entry point.
print("not built yet")
