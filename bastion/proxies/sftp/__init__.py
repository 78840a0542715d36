"""SFTP (protocol version 3, as OpenSSH speaks it) packet codec for the file-transfer proxy."""
