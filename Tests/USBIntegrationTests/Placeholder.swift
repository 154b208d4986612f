// Placeholder so the target builds until its tests land; delete when adding real tests.
