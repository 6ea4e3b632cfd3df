"""One module per dashboard page; Streamlit runs each file as the page's script."""
