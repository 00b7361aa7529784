"""How other runtimes and people see the factory's bundles.

client_records.py  WebLLM model records and mlc-llm package-config entries
mlc_repo.py        a Hugging Face MLC weight repo folder and model card (`factory export`),
                   and mlc-llm's read-only weight cache (`pull --mlc-cache`)
catalog.py         the static catalog of a store; catalog_page.py its HTML
run_page.py        the page that runs a WebGPU bundle in the visitor's browser
release.py         `factory release`: the release manifest, the index and the notes table

A new client (an app folder, another runtime's records) adds a module here and touches no
storage. May import every layer below the cells: the shared modules, devices, manifest,
plan, store and trust. The store never imports it.
"""
