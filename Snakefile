# microarch workflow (placeholder until the workflow issue lands)
