// Placeholder so the target builds until its sources land; delete when adding real code.
