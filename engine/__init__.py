"""Pure decision logic: constraints in, ranked and explained recommendations out.
Imports neither Streamlit nor torch."""
