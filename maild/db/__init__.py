"""The shared database: tables (the CRM contract), engine set-up, repositories, migrations."""
