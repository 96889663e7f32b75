"""The HTTP service (`complai serve`): the API, the web console and the data-subject portal, each
reaching the workspace only through sessions (app/)."""
