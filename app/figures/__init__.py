"""Plotly figure builders for the web app.

Each builder is a pure function of data (methods, a recommendation, a gap report) that returns a
``plotly.graph_objects.Figure``; none imports Streamlit, so tests can check what a figure holds
(how many markers, which cells are marked as gaps) without starting the app.
"""
