"""The toy world itself: scene parameters, the renderer, the rules, the labels and the scene code."""
