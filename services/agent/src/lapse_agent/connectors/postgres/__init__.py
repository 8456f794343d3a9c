"""The PostgreSQL connector: a permission is direct membership of a login in a target role."""
